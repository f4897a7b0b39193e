import { describe, expect, inject, it } from "vitest";
import { smoke } from "../../scripts/smoke.mjs";

describe("post-deploy smoke checks (scripts/smoke.mjs)", () => {
  it("pass against the running platform with the admin token", async () => {
    const lines: string[] = [];
    const failed = await smoke({
      url: inject("baseUrl"),
      token: inject("adminToken"),
      log: (l) => lines.push(l),
    });
    expect(lines.filter((l) => l.startsWith("FAIL"))).toEqual([]);
    expect(failed).toBe(0);
    expect(lines).toHaveLength(7);
  });

  it("fail the metrics check with a wrong token", async () => {
    const lines: string[] = [];
    const failed = await smoke({
      url: inject("baseUrl"),
      token: "not-a-valid-token-at-all",
      log: (l) => lines.push(l),
    });
    expect(failed).toBe(1);
    expect(lines.find((l) => l.startsWith("FAIL"))).toContain("GET /metrics answers Prometheus text");
  });
});
