import { describe, expect, it } from "vitest";
import { api } from "../helpers";

describe("GET /healthz", () => {
  it("answers 200 with every binding check passing", async () => {
    const res = await api("/healthz");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ok: boolean; checks: Record<string, { ok: boolean }> };
    expect(body.ok).toBe(true);
    expect(Object.keys(body.checks).sort()).toEqual(["agentTasksQueue", "d1", "eventsQueue", "r2"]);
  });

  it("answers unknown routes with the one error body", async () => {
    const res = await api("/v1/nope");
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { code: string; requestId: string } };
    expect(body.error.code).toBe("NOT_FOUND");
    expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
  });
});
