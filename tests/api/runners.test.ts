import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { api, manifest, type SubmissionBody, tarGz, upload } from "../helpers";
import { createProject, publishReviewer, signup, waitForStatus } from "../kamachiq-helpers";

let owner: Awaited<ReturnType<typeof signup>>;
let stranger: Awaited<ReturnType<typeof signup>>;
let projectId = "";

interface Job {
  attemptId: string;
  projectId: string;
  taskId: string;
  sha256: string;
  bundlePath: string;
  claims: number;
}

const post = (path: string, token: string, json: unknown) => api(path, { method: "POST", token, json });

async function claim(token: string, runnerId: string): Promise<Response> {
  return post("/v1/runners/claim", token, { runnerId, waitSeconds: 0 });
}

/** Waits for the agent to hand the task to the runner queue, then claims it. */
async function claimWhenQueued(token: string, runnerId: string): Promise<Job> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const res = await claim(token, runnerId);
    if (res.status === 200) return ((await res.json()) as { job: Job }).job;
    if (Date.now() > deadline) throw new Error(`no job: ${res.status}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  stranger = await signup();
  const doc = manifest({
    name: `${owner.handle}/shell-tests`,
    runtime: "runner",
    permissions: ["runner.exec", "artifacts.write"],
  });
  (doc.spec as Record<string, unknown>).entrypoint = "run.sh";
  const res = await upload(
    owner.apiKey,
    await tarGz([
      { name: "capsule.yaml", body: stringify(doc) },
      { name: "run.sh", body: "echo ok\n" },
    ]),
  );
  const { submission } = (await res.json()) as SubmissionBody;
  expect(submission.status).toBe("pending_review");
  const approved = await post(`/v1/submissions/${submission.id}/decision`, env.SOMA_ADMIN_TOKEN, {
    decision: "approve",
  });
  expect(approved.status).toBe(200);
  const created = await createProject(owner.apiKey, {
    name: "runner job",
    spec: {
      tasks: [{ id: "run", capsule: `${owner.handle}/shell-tests` }],
      acceptPermissions: ["runner.exec", "artifacts.write"],
    },
    budget: { tokens: 100_000 },
  });
  expect(created.status).toBe(201);
  projectId = ((await created.json()) as { project: { id: string } }).project.id;
});

describe("runner jobs", () => {
  it("are claimed only by their project's owner (or an admin), then held under a lease", async () => {
    expect((await claim(stranger.apiKey, "stranger-1")).status).toBe(204);
    const job = await claimWhenQueued(owner.apiKey, "runner-a");
    expect(job).toMatchObject({ projectId, taskId: "run", claims: 1 });
    expect(job.sha256).toMatch(/^[a-f0-9]{64}$/);
    expect((await api(job.bundlePath)).status).toBe(200);
    expect((await claim(owner.apiKey, "runner-b")).status).toBe(204);

    expect(
      (await post(`/v1/runners/jobs/${job.attemptId}/heartbeat`, owner.apiKey, { runnerId: "runner-a" }))
        .status,
    ).toBe(200);
    expect(
      (await post(`/v1/runners/jobs/${job.attemptId}/heartbeat`, owner.apiKey, { runnerId: "runner-b" }))
        .status,
    ).toBe(409);
    expect(
      (await post(`/v1/runners/jobs/${job.attemptId}/heartbeat`, stranger.apiKey, { runnerId: "runner-a" }))
        .status,
    ).toBe(404);

    // Handed back, the same attempt goes to the next runner.
    expect(
      (await post(`/v1/runners/jobs/${job.attemptId}/release`, owner.apiKey, { runnerId: "runner-a" }))
        .status,
    ).toBe(200);
    const again = await claimWhenQueued(owner.apiKey, "runner-b");
    expect(again).toMatchObject({ attemptId: job.attemptId, claims: 2 });

    expect(
      (
        await post(`/v1/runners/jobs/${job.attemptId}/complete`, owner.apiKey, {
          runnerId: "runner-b",
          status: "failed",
        })
      ).status,
    ).toBe(400);
    expect(
      (
        await post(`/v1/runners/jobs/${job.attemptId}/complete`, owner.apiKey, {
          runnerId: "runner-b",
          status: "succeeded",
          artifacts: [{ path: "../x", content: "" }],
        })
      ).status,
    ).toBe(400);
    const done = await post(`/v1/runners/jobs/${job.attemptId}/complete`, owner.apiKey, {
      runnerId: "runner-b",
      status: "succeeded",
      output: { tests: { passed: 3, failed: 0, errors: 0 } },
      logs: "ran 3 tests\nOK\n",
      artifacts: [{ path: "reports/tests.txt", content: "3 passed\n" }],
    });
    expect(done.status, await done.clone().text()).toBe(200);
    expect(await done.json()).toEqual({ settled: true, status: "succeeded" });
    expect((await waitForStatus(owner.apiKey, projectId, ["completed", "failed"])).status).toBe("completed");
    expect(
      await (await api(`/v1/projects/${projectId}/logs/${job.attemptId}`, { token: owner.apiKey })).text(),
    ).toBe("ran 3 tests\nOK\n");
    expect(
      await (
        await api(`/v1/projects/${projectId}/artifacts/reports/tests.txt`, { token: owner.apiKey })
      ).text(),
    ).toBe("3 passed\n");
    expect(
      (
        await post(`/v1/runners/jobs/${job.attemptId}/complete`, owner.apiKey, {
          runnerId: "runner-b",
          status: "succeeded",
          output: {},
        })
      ).status,
    ).toBe(409);
  });

  it("validate runner ids and require a caller", async () => {
    expect((await claim(owner.apiKey, "bad id with spaces")).status).toBe(400);
    expect((await api("/v1/runners/claim", { method: "POST", json: { runnerId: "x" } })).status).toBe(401);
    expect(
      (await post("/v1/runners/jobs/not-an-attempt/heartbeat", owner.apiKey, { runnerId: "x" })).status,
    ).toBe(400);
    expect(
      (await post(`/v1/runners/jobs/att_${"0".repeat(32)}/heartbeat`, owner.apiKey, { runnerId: "x" }))
        .status,
    ).toBe(404);
  });
});
