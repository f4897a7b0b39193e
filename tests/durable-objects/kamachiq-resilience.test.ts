import {
  createExecutionContext,
  createMessageBatch,
  getQueueResult,
  runInDurableObject,
  waitOnExecutionContext,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { ProjectCoordinator } from "../../durable-objects/project-coordinator";
import { handleAgentTasks } from "../../workers/consumers/agent-tasks";
import { coordinator } from "../../workers/shared/kamachiq/coordinator-client";
import { api } from "../helpers";
import {
  createProject,
  getProject,
  publishReviewer,
  publishWorker,
  signup,
  waitForStatus,
} from "../kamachiq-helpers";

// Counts its runs in a project artefact, then holds its attempt open until the test writes go.txt.
const HOLDS = `export default { async run(input, ctx) {
  const runs = Number((await ctx.artifacts.read("runs.txt")) ?? "0") + 1;
  await ctx.artifacts.write("runs.txt", String(runs));
  for (let i = 0; i < 300 && (await ctx.artifacts.read("go.txt")) === null; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return { files: [{ path: "m.py", content: '"""Module."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

/** Fails until it has been called `failTimes` times, counting calls in a project artefact. */
const FLAKY = `export default { async run(input, ctx) {
  const key = "counters/" + input.name + ".txt";
  const count = Number((await ctx.artifacts.read(key)) ?? "0") + 1;
  await ctx.artifacts.write(key, String(count));
  if (count <= Number(input.failTimes ?? 0)) throw new Error("transient failure " + count);
  return { files: [{ path: input.name + ".py", content: '"""Module."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

const PERMISSIONS = ["artifacts.read", "artifacts.write"];

let owner: Awaited<ReturnType<typeof signup>>;
let capsule = "";

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  capsule = `${owner.handle}/holds`;
  await publishWorker(owner.apiKey, capsule, HOLDS, { permissions: PERMISSIONS });
  await publishWorker(owner.apiKey, `${owner.handle}/flaky`, FLAKY, { permissions: PERMISSIONS });
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
    // Another delivery of the attempt (a new message id, as a duplicate send has) while its capsule still runs,
    // handed to the agent consumer directly: the local queue would hold it back until the first batch ends.
    const batch = createMessageBatch("soma-agent-tasks", [
      { id: "duplicate-delivery", timestamp: new Date(), attempts: 1, body: { projectId: id, attemptId } },
    ]);
    const ctx = createExecutionContext();
    const handled = handleAgentTasks(batch as MessageBatch<unknown>, env, ctx);
    await new Promise((r) => setTimeout(r, 1000));
    await release(id);
    await handled;
    await waitOnExecutionContext(ctx);
    expect(await getQueueResult(batch, ctx)).toMatchObject({
      explicitAcks: ["duplicate-delivery"],
      retryMessages: [],
    });
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

/** Replays the task.status events of the log: each task's statuses in order, from its first. */
function replay(events: TimelineEvent[]): Map<string, string[]> {
  const statuses = new Map<string, string[]>();
  for (const e of events) {
    if (e.type !== "task.status" || !e.taskId) continue;
    statuses.set(e.taskId, [...(statuses.get(e.taskId) ?? []), String(e.data.status)]);
  }
  return statuses;
}

/** The log must account for every task's current status: its last task.status event is the snapshot's. */
async function expectLogMatches(id: string): Promise<Map<string, string[]>> {
  const snapshot = await getProject(owner.apiKey, id);
  const statuses = replay(await timeline(id));
  expect(Object.fromEntries([...statuses].map(([task, list]) => [task, list.at(-1)]))).toEqual(
    Object.fromEntries(snapshot.tasks.map((t) => [t.id, t.status])),
  );
  return statuses;
}

describe("the event log", () => {
  it("holds every task transition: first statuses, retries coming due, completion", async () => {
    const flaky = `${owner.handle}/flaky`;
    const res = await createProject(owner.apiKey, {
      name: "log",
      spec: {
        tasks: [
          { id: "first", capsule: flaky, inputs: { name: "first", failTimes: 1 } },
          { id: "second", capsule: flaky, inputs: { name: "second" }, dependsOn: ["first"] },
        ],
        acceptPermissions: PERMISSIONS,
      },
      budget: { tokens: 100_000 },
    });
    const { id } = ((await res.json()) as { project: { id: string } }).project;
    expect((await waitForStatus(owner.apiKey, id, ["completed", "failed"])).status).toBe("completed");
    const statuses = await expectLogMatches(id);
    expect(statuses.get("first")).toEqual([
      "ready",
      "queued",
      "running",
      "retry_wait",
      "ready",
      "queued",
      "running",
      "completed",
    ]);
    expect(statuses.get("second")).toEqual(["pending", "ready", "queued", "running", "completed"]);
  });

  it("holds the cancellation of every open task", async () => {
    const tasks = Array.from({ length: 3 }, (_, i) => ({
      id: `c${i}`,
      capsule,
      dependsOn: i > 0 ? [`c${i - 1}`] : [],
    }));
    const id = await start({ spec: { tasks, acceptPermissions: PERMISSIONS } });
    await runningAttempt(id);
    const res = await api(`/v1/projects/${id}/cancel`, { method: "POST", token: owner.apiKey });
    expect(res.status).toBe(200);
    const statuses = await expectLogMatches(id);
    expect(statuses.get("c0")?.at(-1)).toBe("cancelled");
    expect(statuses.get("c2")).toEqual(["pending", "cancelled"]);
    await release(id);
  });

  it("holds skipped tasks reopened as pending when a reviewer asks for changes on a failed task", async () => {
    const flaky = `${owner.handle}/flaky`;
    const res = await createProject(owner.apiKey, {
      name: "reopen",
      spec: {
        tasks: [
          { id: "broken", capsule: flaky, inputs: { name: "broken", failTimes: 4 } },
          { id: "after", capsule: flaky, inputs: { name: "after" }, dependsOn: ["broken"] },
        ],
        acceptPermissions: PERMISSIONS,
      },
      budget: { tokens: 100_000 },
    });
    const { id } = ((await res.json()) as { project: { id: string } }).project;
    expect((await waitForStatus(owner.apiKey, id, ["failed", "completed"])).status).toBe("failed");
    expect((await expectLogMatches(id)).get("after")).toEqual(["pending", "skipped"]);
    const decided = await api(`/v1/projects/${id}/tasks/broken/review`, {
      method: "POST",
      token: owner.apiKey,
      json: { decision: "request_changes", feedback: "try once more" },
    });
    expect(decided.status).toBe(200);
    expect((await waitForStatus(owner.apiKey, id, ["completed", "failed"])).status).toBe("completed");
    const statuses = await expectLogMatches(id);
    expect(statuses.get("after")).toEqual([
      "pending",
      "skipped",
      "pending",
      "ready",
      "queued",
      "running",
      "completed",
    ]);
    expect(statuses.get("broken")?.slice(-5)).toEqual(["failed", "ready", "queued", "running", "completed"]);
  });
});

describe("dispatch failures", () => {
  it("puts a task whose message could not be sent back to ready and dispatches it again soon, charging no failure", async () => {
    const res = await createProject(owner.apiKey, {
      name: "unsent",
      spec: {
        tasks: [
          { id: "h", capsule },
          { id: "next", capsule: `${owner.handle}/flaky`, inputs: { name: "next" }, dependsOn: ["h"] },
        ],
        acceptPermissions: PERMISSIONS,
      },
      budget: { tokens: 100_000 },
    });
    const { id } = ((await res.json()) as { project: { id: string } }).project;
    await runningAttempt(id);
    // The queue refuses the coordinator's next send once (as a real outage would), then works again.
    let refused = 0;
    await runInDurableObject(stubOf(id), (instance: ProjectCoordinator) => {
      const held = instance as unknown as { env: Env };
      const queue = held.env.AGENT_TASKS;
      held.env = {
        ...held.env,
        AGENT_TASKS: {
          send: (body, options) => queue.send(body, options),
          sendBatch: (messages, options) => {
            if (refused === 0) {
              refused += 1;
              return Promise.reject(new Error("Queue send failed: service unavailable"));
            }
            return queue.sendBatch(messages, options);
          },
        } as Queue,
      };
    });
    await release(id);
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed"], 20_000);
    expect(refused).toBe(1);
    expect(done.status).toBe("completed");
    expect(done.tasks.find((t) => t.id === "next")).toMatchObject({ status: "completed", attempts: 1 });
    const events = await timeline(id);
    const unsent = events.filter((e) => e.type === "task.dispatch_failed");
    expect(unsent).toHaveLength(1);
    expect(events.some((e) => e.type === "task.retry_scheduled" || e.type === "task.lease_expired")).toBe(
      false,
    );
    expect(replay(events).get("next")).toEqual([
      "pending",
      "ready",
      "queued",
      "ready",
      "queued",
      "running",
      "completed",
    ]);
    // The withdrawn attempt's account reservation is released, not left to expire.
    const reservations = await runInDurableObject(
      env.ACCOUNT_BUDGET.get(env.ACCOUNT_BUDGET.idFromName(owner.id)),
      (_i, state) =>
        state.storage.sql
          .exec<{ n: number }>(
            "SELECT count(*) AS n FROM reservations WHERE attempt_id = ?",
            String(unsent[0]?.data.attemptId),
          )
          .one().n,
    );
    expect(reservations).toBe(0);
  });
});
