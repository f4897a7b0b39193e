import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import { CapsuleHost } from "../../workers/entrypoints/capsule-host";

const { port } = inject("egressServer");
const declared = `http://127.0.0.1:${port}`;
const undeclared = `http://localhost:${port}`;

/** The host a sandboxed capsule gets, for a capsule that declared egress to 127.0.0.1 only. */
function host(): CapsuleHost {
  const props = {
    projectId: "p".repeat(64),
    taskId: "t",
    attemptId: `att_${"0".repeat(32)}`,
    capsule: "acme/fetcher",
    permissions: ["network.egress:127.0.0.1"],
  };
  return new CapsuleHost(Object.assign(createExecutionContext(), { props }), env);
}

async function hits(): Promise<number> {
  return ((await (await fetch(`${declared}/hits`)).json()) as { hits: number }).hits;
}

const redirect = (to: string, status = 302) =>
  `${declared}/redirect?status=${status}&to=${encodeURIComponent(to)}`;

describe("capsule egress", () => {
  it("returns a declared host's redirect to an undeclared host without following it", async () => {
    const before = await hits();
    const response = await host().egress(redirect(`${undeclared}/hello`));
    expect(response.status).toBe(302);
    expect(response.headers.location).toBe(`${undeclared}/hello`);
    expect(await hits()).toBe(before);
  });

  it("follows redirects between declared hosts, relative ones too, and turns a 303 after a POST into a GET", async () => {
    expect(await host().egress(redirect(`${declared}/hello`))).toMatchObject({
      status: 200,
      body: "hello GET",
    });
    expect(await host().egress(redirect("/hello", 307), { method: "POST", body: "x" })).toMatchObject({
      status: 200,
      body: "hello POST",
    });
    expect(await host().egress(redirect("/hello", 303), { method: "POST", body: "x" })).toMatchObject({
      status: 200,
      body: "hello GET",
    });
  });

  it("stops at a redirect chain that hands on to an undeclared host on a later hop", async () => {
    const before = await hits();
    const response = await host().egress(redirect(redirect(`${undeclared}/hello`)));
    expect(response.status).toBe(302);
    expect(response.headers.location).toBe(`${undeclared}/hello`);
    expect(await hits()).toBe(before);
  });

  it("still refuses an undeclared host asked for directly", async () => {
    await expect(host().egress(`${undeclared}/hello`)).rejects.toThrow(
      "PERMISSION_DENIED: acme/fetcher did not declare network.egress:localhost",
    );
  });
});
