import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { sha256Hex } from "../../workers/shared/encoding";
import {
  adminToken,
  api,
  bundle,
  countObjects,
  countRows,
  errorOf,
  grantRoles,
  publish,
  type SubmissionBody,
  signup,
  tarGz,
  upload,
} from "../helpers";

const RISKY_CODE = "export default { async run(input) { return eval(input.code); } };\n";

async function riskyBundle(name: string, version = "1.0.0"): Promise<Uint8Array> {
  return bundle({ name, version, permissions: ["artifacts.read"] }, [
    { name: "dist/extra.js", body: RISKY_CODE },
  ]);
}

async function stateCounts() {
  return {
    submissions: await countRows("submissions"),
    versions: await countRows("capsule_versions"),
    outbox: await countRows("outbox"),
    objects: await countObjects(),
  };
}

describe("POST /v1/capsules", () => {
  it("publishes a low-risk capsule at once with its score and findings", async () => {
    const author = await signup();
    const res = await upload(author.apiKey, await bundle({ name: `${author.handle}/hello` }));
    expect(res.status).toBe(201);
    const { submission } = (await res.json()) as SubmissionBody;
    expect(submission).toMatchObject({
      name: `${author.handle}/hello`,
      version: "1.0.0",
      status: "published",
    });
    expect(submission.riskScore).toBeLessThan(0.3);
    expect(submission.findings.map((f) => f.id)).toContain("permission:artifacts.read");
    const detail = await api(`/v1/capsules/${author.handle}/hello`);
    expect(detail.status).toBe(200);
  });

  it("publishes several versions of a new capsule uploaded at the same time, latest by semver", async () => {
    const author = await signup();
    const name = `${author.handle}/racy`;
    const versions = ["1.0.0", "1.2.0", "1.1.0", "2.0.0-rc.1"];
    const responses = await Promise.all(
      versions.map(async (version) => upload(author.apiKey, await bundle({ name, version }))),
    );
    expect(responses.map((r) => r.status)).toEqual([201, 201, 201, 201]);
    const detail = (await (await api(`/v1/capsules/${name}`)).json()) as {
      capsule: { latestVersion: string };
      versions: { version: string }[];
    };
    expect(detail.capsule.latestVersion).toBe("1.2.0");
    expect(detail.versions.map((v) => v.version)).toEqual(["2.0.0-rc.1", "1.2.0", "1.1.0", "1.0.0"]);
  });

  it("holds a capsule that evaluates dynamic code for human review", async () => {
    const author = await signup();
    const res = await upload(author.apiKey, await riskyBundle(`${author.handle}/risky`));
    expect(res.status).toBe(201);
    const { submission } = (await res.json()) as SubmissionBody;
    expect(submission.status).toBe("pending_review");
    expect(submission.riskScore).toBeGreaterThanOrEqual(0.3);
    expect(submission.findings.map((f) => f.id)).toContain("dynamic-code-eval");
    expect((await api(`/v1/capsules/${author.handle}/risky`)).status).toBe(404);
  });

  it("accepts one of two uploads of the same new version racing each other and answers 409 to the other", async () => {
    const author = await signup();
    const name = `${author.handle}/twin`;
    const bodies = await Promise.all([
      bundle({ name, description: "first of the twins" }),
      bundle({ name, description: "second of the twins" }),
    ]);
    const responses = await Promise.all(bodies.map((body) => upload(author.apiKey, body)));
    expect(responses.map((r) => r.status).sort()).toEqual([201, 409]);
    const open = await env.DB.prepare(
      "SELECT sha256 FROM submissions WHERE name = ? AND status IN ('pending_review', 'approved', 'published')",
    )
      .bind(name)
      .all<{ sha256: string }>();
    expect(open.results).toHaveLength(1);
    // The published bytes are the winner's, exactly.
    const served = await api(`/v1/capsules/${name}/versions/1.0.0/bundle`);
    const digest = await sha256Hex(new Uint8Array(await served.arrayBuffer()));
    expect(digest).toBe(open.results[0]?.sha256);
  });

  it("answers 409 for a name@version that exists, and never reuses it", async () => {
    const author = await signup();
    await publish(author.apiKey, { name: `${author.handle}/dup` });
    const before = await stateCounts();
    const res = await upload(
      author.apiKey,
      await bundle({ name: `${author.handle}/dup`, description: "changed" }),
    );
    expect(res.status).toBe(409);
    expect((await errorOf(res)).code).toBe("CONFLICT");
    expect(await stateCounts()).toEqual(before);
  });

  it("refuses a capsule named outside the caller's namespace and stores nothing", async () => {
    const author = await signup();
    const before = await stateCounts();
    const res = await upload(author.apiKey, await bundle({ name: "someone-else/tool" }));
    expect(res.status).toBe(403);
    const error = await errorOf(res);
    expect(error.message).toContain("metadata.name");
    expect(await stateCounts()).toEqual(before);
  });

  it("refuses bundles that fail validation, naming the entry, and stores nothing", async () => {
    const author = await signup();
    const cases: [Uint8Array, number, string][] = [
      [new TextEncoder().encode("definitely not gzip, but long enough to look like a body"), 422, "not gzip"],
      [await tarGz([{ name: "readme.txt", body: "no manifest" }]), 422, "capsule.yaml"],
      [await tarGz([{ name: "capsule.yaml", body: "a: [" }]), 422, "YAML"],
      [
        await bundle({ name: `${author.handle}/x` }, [{ name: "../escape.js", body: "x" }]),
        422,
        "../escape.js",
      ],
      [
        await bundle({ name: `${author.handle}/x` }, [{ name: "/etc/passwd", body: "x" }]),
        422,
        "/etc/passwd",
      ],
      [
        await bundle({ name: `${author.handle}/x` }, [
          { name: "dist/link", type: "symlink", linkname: "/etc/passwd" },
        ]),
        422,
        "dist/link",
      ],
      [await bundle({ name: `${author.handle}/x`, version: "1.0" }), 422, "metadata.version"],
      [
        await bundle({ name: `${author.handle}/x`, dependencies: { "nobody/missing": "^1.0.0" } }),
        422,
        "nobody/missing",
      ],
    ];
    const before = await stateCounts();
    for (const [bytes, status, mention] of cases) {
      const res = await upload(author.apiKey, bytes);
      expect(res.status, mention).toBe(status);
      const error = await errorOf(res);
      expect(JSON.stringify(error), mention).toContain(mention);
    }
    expect(await stateCounts()).toEqual(before);
  });

  it("refuses a body over the compressed limit with 413", async () => {
    const author = await signup();
    const big = new Uint8Array(Number(env.MAX_BUNDLE_BYTES) + 1);
    big.set([0x1f, 0x8b]);
    const res = await upload(author.apiKey, big);
    expect(res.status).toBe(413);
  });

  it("requires gzip content, an account and a valid token", async () => {
    const author = await signup();
    const bytes = await bundle({ name: `${author.handle}/auth` });
    expect((await upload(author.apiKey, bytes, "application/json")).status).toBe(415);
    expect(
      (
        await api("/v1/capsules", {
          method: "POST",
          body: bytes,
          headers: { "content-type": "application/gzip" },
        })
      ).status,
    ).toBe(401);
    expect((await upload(adminToken(), bytes)).status).toBe(403);
    expect((await upload("soma_unknown", bytes)).status).toBe(401);
  });
});

describe("review", () => {
  async function pending(): Promise<{
    id: string;
    author: Awaited<ReturnType<typeof signup>>;
    name: string;
  }> {
    const author = await signup();
    const name = `${author.handle}/needs-review`;
    const res = await upload(author.apiKey, await riskyBundle(name));
    const { submission } = (await res.json()) as SubmissionBody;
    return { id: submission.id, author, name };
  }

  it("lists pending submissions for reviewers with the manifest and risk findings", async () => {
    const { id } = await pending();
    const reviewer = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
    const res = await api("/v1/review-queue", { token: reviewer.apiKey });
    expect(res.status).toBe(200);
    const { items } = (await res.json()) as {
      items: { id: string; manifest: unknown; findings: unknown[]; previous: unknown }[];
    };
    const item = items.find((i) => i.id === id);
    expect(item?.manifest).toBeTruthy();
    expect(item?.findings.length).toBeGreaterThan(0);
    expect(item?.previous).toBeNull();
  });

  it("keeps the review queue from plain users", async () => {
    const user = await signup();
    expect((await api("/v1/review-queue", { token: user.apiKey })).status).toBe(403);
    expect((await api("/v1/review-queue")).status).toBe(401);
  });

  it("publishes on approval, signed and recorded with the reviewer", async () => {
    const { id, name } = await pending();
    const reviewer = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
    const res = await api(`/v1/submissions/${id}/decision`, {
      method: "POST",
      token: reviewer.apiKey,
      json: { decision: "approve", notes: "eval is sandboxed" },
    });
    expect(res.status).toBe(200);
    const { submission } = (await res.json()) as {
      submission: { status: string; review: { reviewer: string; decision: string } };
    };
    expect(submission.status).toBe("published");
    expect(submission.review).toMatchObject({ reviewer: reviewer.handle, decision: "approve" });
    expect((await api(`/v1/capsules/${name}`)).status).toBe(200);
  });

  it("records rejection and change requests without publishing, and refuses a second decision", async () => {
    const reviewer = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
    for (const decision of ["reject", "request_changes"] as const) {
      const { id, name } = await pending();
      const res = await api(`/v1/submissions/${id}/decision`, {
        method: "POST",
        token: reviewer.apiKey,
        json: { decision, notes: "please remove eval" },
      });
      expect(res.status).toBe(200);
      expect((await api(`/v1/capsules/${name}`)).status).toBe(404);
      const again = await api(`/v1/submissions/${id}/decision`, {
        method: "POST",
        token: reviewer.apiKey,
        json: { decision: "approve" },
      });
      expect(again.status).toBe(409);
      expect((await errorOf(again)).code).toBe("INVALID_STATE");
    }
  });

  it("lets the author resubmit the same version after changes were requested", async () => {
    const { id, author, name } = await pending();
    await api(`/v1/submissions/${id}/decision`, {
      method: "POST",
      token: adminToken(),
      json: { decision: "request_changes", notes: "drop eval" },
    });
    const res = await upload(author.apiKey, await bundle({ name }));
    expect(res.status).toBe(201);
    expect(((await res.json()) as SubmissionBody).submission.status).toBe("published");
  });

  it("never lets a reviewer decide on their own capsule", async () => {
    const { id, author } = await pending();
    await grantRoles(author.handle, ["reviewer"]);
    const res = await api(`/v1/submissions/${id}/decision`, {
      method: "POST",
      token: author.apiKey,
      json: { decision: "approve" },
    });
    expect(res.status).toBe(403);
  });

  it("validates the decision body and requires the reviewer role", async () => {
    const { id } = await pending();
    const user = await signup();
    expect(
      (
        await api(`/v1/submissions/${id}/decision`, {
          method: "POST",
          token: user.apiKey,
          json: { decision: "approve" },
        })
      ).status,
    ).toBe(403);
    const noNotes = await api(`/v1/submissions/${id}/decision`, {
      method: "POST",
      token: adminToken(),
      json: { decision: "reject" },
    });
    expect(noNotes.status).toBe(400);
    const badDecision = await api(`/v1/submissions/${id}/decision`, {
      method: "POST",
      token: adminToken(),
      json: { decision: "maybe" },
    });
    expect(badDecision.status).toBe(400);
    expect(
      (
        await api("/v1/submissions/sub_nope/decision", {
          method: "POST",
          token: adminToken(),
          json: { decision: "approve" },
        })
      ).status,
    ).toBe(400);
  });

  it("shows a submission to its author and reviewers only", async () => {
    const { id, author } = await pending();
    const stranger = await signup();
    expect((await api(`/v1/submissions/${id}`, { token: author.apiKey })).status).toBe(200);
    expect((await api(`/v1/submissions/${id}`, { token: adminToken() })).status).toBe(200);
    expect((await api(`/v1/submissions/${id}`, { token: stranger.apiKey })).status).toBe(404);
    expect((await api(`/v1/submissions/${id}`)).status).toBe(401);
    const mine = (await (await api("/v1/submissions", { token: author.apiKey })).json()) as {
      items: { id: string }[];
    };
    expect(mine.items.map((s) => s.id)).toContain(id);
  });
});
