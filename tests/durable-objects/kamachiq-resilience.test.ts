import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { ProjectCoordinator } from "../../durable-objects/project-coordinator";
import { coordinator } from "../../workers/shared/kamachiq/coordinator-client";
import { api } from "../helpers";
import { createProject, publishReviewer, publishWorker, signup, waitForStatus } from "../kamachiq-helpers";

// Counts its runs in a project artefact, then holds its attempt open until the test writes go.txt.
const HOLDS = `export default { async run(input, ctx) {
  const runs = Number((await ctx.artifacts.read("runs.txt")) ?? "0") + 1;
  await ctx.artifacts.write("runs.txt", String(runs));
  for (let i = 0; i < 300 && (await ctx.artifacts.read("go.txt")) === null; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return { files: [{ path: "m.py", content: '"""Module."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

const PERMISSIONS = ["artifacts.read", "artifacts.write"];

let owner: Awaited<ReturnType<typeof signup>>;
let capsule = "";

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  capsule = `${owner.handle}/holds`;
  await publishWorker(owner.apiKey, capsule, HOLDS, { permissions: PERMISSIONS });
});

function stubOf(id: string) {
  return env.PROJECT_COORDINATOR.get(env.PROJECT_COORDINATOR.idFromString(id));
}

async function start(body: Record<string, unknown> = {}): Promise<string> {
  const res = await createProject(owner.apiKey, {
    name: "resilience",
    spec: { tasks: [{ id: "h", capsule }], acceptPermissions: PERMISSIONS },
    budget: { tokens: 100_000 },
    ...body,
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { project: { id: string } }).project.id;
}

async function runningAttempt(id: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const rows = await runInDurableObject(stubOf(id), (_i: ProjectCoordinator, state) =>
      state.storage.sql.exec<{ id: string }>("SELECT id FROM attempts WHERE status = 'running'").toArray(),
    );
    if (rows[0]) return rows[0].id;
    if (Date.now() > deadline) throw new Error("no attempt started");
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function release(id: string): Promise<void> {
  await env.BUNDLES.put(`projects/${id}/artifacts/go.txt`, "go");
}

async function runs(id: string): Promise<number> {
  return Number((await (await env.BUNDLES.get(`projects/${id}/artifacts/runs.txt`))?.text()) ?? "0");
}

interface TimelineEvent {
  type: string;
  taskId: string | null;
  data: Record<string, unknown>;
}

async function timeline(id: string): Promise<TimelineEvent[]> {
  const res = await api(`/v1/projects/${id}/report`, { token: owner.apiKey });
  expect(res.status).toBe(200);
  return ((await res.json()) as { report: { timeline: TimelineEvent[] } }).report.timeline;
}

describe("duplicate deliveries", () => {
  it("never runs an attempt twice at once when its message is delivered again mid-run", async () => {
    const id = await start();
    const attemptId = await runningAttempt(id);
    // Another delivery of the attempt while its capsule is still running (a new message, as a duplicate is).
    await env.AGENT_TASKS.send({ projectId: id, attemptId });
    await new Promise((r) => setTimeout(r, 2500));
    await release(id);
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed"]);
    expect(done.status).toBe("completed");
    expect(await runs(id)).toBe(1);
    expect(done.tasks[0]?.attempts).toBe(1);
    // A caller without a claim (a runner's heartbeat) still gets a running attempt; an agent's duplicate does not.
    const other = await start();
    const running = await runningAttempt(other);
    expect(await coordinator(env, other).startAttempt(running, "another-message")).toMatchObject({
      ok: false,
      code: "INVALID_STATE",
    });
    expect(await coordinator(env, other).startAttempt(running)).toMatchObject({ ok: true });
    await release(other);
    await waitForStatus(owner.apiKey, other, ["completed", "failed"]);
  });

  it("settles an attempt once when two settlements race: one charge, one gate, one usage event", async () => {
    const id = await start({ autoRemediations: 1 });
    const attemptId = await runningAttempt(id);
    const stub = stubOf(id);
    const project = coordinator(env, id);
    const outcome = {
      status: "succeeded" as const,
      output: { files: [] },
      usage: { inputTokens: 300, outputTokens: 200 },
      gate: {
        scores: { completeness: 0.5, correctness: 0.5, style: 0.5, documentation: 0.5 },
        feedback: "write the module",
      },
      gateUsage: { inputTokens: 10, outputTokens: 5 },
    };
    const results = await Promise.all([
      project.settleAttempt(attemptId, outcome),
      project.settleAttempt(attemptId, outcome),
    ]);
    expect(results.map((r) => (r.ok ? r.value.duplicate : r.code)).sort()).toEqual([false, true]);
    const settled = await runInDurableObject(stub, (_i: ProjectCoordinator, state) => ({
      charged: state.storage.sql
        .exec<{ n: number }>(
          "SELECT coalesce(sum(tokens), 0) AS n FROM budget_entries WHERE attempt_id = ? AND kind = 'settle'",
          attemptId,
        )
        .one().n,
      gates: state.storage.sql
        .exec<{ n: number }>(
          "SELECT count(*) AS n FROM reviews WHERE attempt_id = ? AND kind = 'gate'",
          attemptId,
        )
        .one().n,
      remediations: state.storage.sql.exec<{ n: number }>("SELECT remediations AS n FROM tasks").one().n,
    }));
    expect(settled).toEqual({ charged: 515, gates: 1, remediations: 1 });
    const outputs = await env.BUNDLES.list({ prefix: `projects/${id}/outputs/h/${attemptId}` });
    expect(outputs.objects).toHaveLength(1);

    // The remediation re-runs the task; the first run's own late report changes nothing.
    await release(id);
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed", "awaiting_review"]);
    expect(done.status).toBe("completed");
    expect(done.tasks[0]?.attempts).toBe(2);
    const events = (await timeline(id)).filter((e) => e.data.attemptId === attemptId);
    expect(events.filter((e) => e.type === "usage.tokens")).toHaveLength(1);
    expect(events.filter((e) => e.type === "gate.scored")).toHaveLength(1);
  });
});
