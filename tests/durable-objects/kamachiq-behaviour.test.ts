import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { ProjectCoordinator } from "../../durable-objects/project-coordinator";
import { api, errorOf } from "../helpers";
import {
  createProject,
  getProject,
  publishReviewer,
  publishWorker,
  signup,
  waitForStatus,
} from "../kamachiq-helpers";

const GOOD_FILE = `'"""Generated."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n'`;

/** Sleeps, then returns a clean file: lets tests watch concurrency. */
const SLOW = `export default { async run(input) {
  await new Promise((r) => setTimeout(r, Number(input.sleepMs ?? 150)));
  return { files: [{ path: String(input.name ?? "x") + ".py", content: ${GOOD_FILE} }] };
} };`;

/** Fails until it has been called `failTimes` times, counting calls in a project artefact. */
const FLAKY = `export default { async run(input, ctx) {
  const key = "counters/" + input.name + ".txt";
  const count = Number((await ctx.artifacts.read(key)) ?? "0") + 1;
  await ctx.artifacts.write(key, String(count));
  if (count <= Number(input.failTimes)) throw new Error("transient failure " + count);
  return { files: [{ path: input.name + ".py", content: ${GOOD_FILE} }], calls: count };
} };`;

/** Sloppy code unless the reviewer's feedback came back with the input. */
const SLOPPY = `export default { async run(input) {
  if (input.feedback) return { files: [{ path: "fixed.py", content: ${GOOD_FILE} }] };
  return { files: [{ path: "sloppy.py", content: "def Bad(x)\\n  return x" }] };
} };`;

/** Produces about `bytes` of output: real token spend for the budget tests. */
const VERBOSE = `export default { async run(input) {
  const line = "# " + "x".repeat(70) + "\\n";
  return { files: [{ path: "notes.md", content: line.repeat(Math.ceil(Number(input.bytes) / line.length)) }] };
} };`;

const CALLS_FETCH = `export default { async run() { const r = await fetch("https://example.com/"); return { status: r.status }; } };`;
const CALLS_EGRESS = `export default { async run(input, ctx) { return await ctx.fetch("https://undeclared.example.org/"); } };`;

let owner: Awaited<ReturnType<typeof signup>>;
let ns = "";

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  ns = owner.handle;
  await publishWorker(owner.apiKey, `${ns}/slow`, SLOW);
  await publishWorker(owner.apiKey, `${ns}/flaky`, FLAKY, {
    permissions: ["artifacts.read", "artifacts.write"],
  });
  await publishWorker(owner.apiKey, `${ns}/sloppy`, SLOPPY);
  await publishWorker(owner.apiKey, `${ns}/fetcher`, CALLS_FETCH);
  await publishWorker(owner.apiKey, `${ns}/verbose`, VERBOSE, { tokens: 4000 });
  await publishWorker(owner.apiKey, `${ns}/egress`, CALLS_EGRESS);
});

async function start(body: Record<string, unknown>): Promise<string> {
  const res = await createProject(owner.apiKey, { budget: { tokens: 1_000_000 }, ...body });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { project: { id: string } }).project.id;
}

interface Report {
  timeline: { type: string; taskId: string | null; data: Record<string, unknown> }[];
  tasks: {
    id: string;
    attemptsDetail: { status: string }[];
    gates: { score: number; subscores: Record<string, number> }[];
  }[];
  reviewerDecisions: { decision: string }[];
  totals: Record<string, number>;
}

async function report(id: string): Promise<Report> {
  const res = await api(`/v1/projects/${id}/report`, { token: owner.apiKey });
  expect(res.status).toBe(200);
  return ((await res.json()) as { report: Report }).report;
}

describe("dispatch", () => {
  it("never runs more than maxParallelAgents at once with 50 ready tasks", async () => {
    const tasks = Array.from({ length: 50 }, (_, i) => ({
      id: `t${i}`,
      capsule: `${ns}/slow`,
      inputs: { name: `t${i}`, sleepMs: 100 },
    }));
    const id = await start({ name: "fifty", spec: { tasks }, maxParallelAgents: 5 });
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed"], 120_000);
    expect(done.status).toBe("completed");
    let active = 0;
    let peak = 0;
    for (const event of (await report(id)).timeline) {
      if (event.type === "task.dispatched") active += 1;
      if (event.type === "usage.tokens") active -= 1;
      peak = Math.max(peak, active);
    }
    expect(peak).toBe(5);
    expect(active).toBe(0);
  }, 150_000);
});

describe("budget", () => {
  it("stops as budget_exhausted when the next task does not fit, never spending past the limit", async () => {
    // Each task reserves 8000 (its 4000 plus the reviewer's 4000) and really spends about 6500 (output + gate).
    const tasks = Array.from({ length: 4 }, (_, i) => ({
      id: `b${i}`,
      capsule: `${ns}/verbose`,
      inputs: { bytes: 12_000 },
    }));
    const id = await start({
      name: "budget",
      spec: { tasks },
      budget: { tokens: 20_000 },
      maxParallelAgents: 1,
    });
    const done = await waitForStatus(owner.apiKey, id, ["budget_exhausted", "completed", "failed"]);
    expect(done.status).toBe("budget_exhausted");
    expect(done.budget.spentTokens).toBeLessThanOrEqual(done.budget.limitTokens);
    expect(done.budget.spentTokens).toBeGreaterThan(12_000);
    expect(done.budget.reservedTokens).toBe(0);
    expect(done.tasks.map((t) => t.status)).toEqual(["completed", "completed", "ready", "ready"]);
  });
});

describe("retries and failures", () => {
  it("retries a task that fails twice and completes it on the third attempt", async () => {
    const id = await start({
      name: "flaky",
      spec: {
        tasks: [{ id: "f", capsule: `${ns}/flaky`, inputs: { name: "twice", failTimes: 2 } }],
        acceptPermissions: ["artifacts.read", "artifacts.write"],
      },
    });
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed"]);
    expect(done.status).toBe("completed");
    expect(done.tasks[0]).toMatchObject({ status: "completed", attempts: 3 });
    const r = await report(id);
    expect(r.tasks[0]?.attemptsDetail.map((a) => a.status)).toEqual(["failed", "failed", "succeeded"]);
    expect(r.timeline.filter((e) => e.type === "task.retry_scheduled")).toHaveLength(2);
  });

  it("fails a task after four failed attempts, skips its dependants and fails the project with the reason", async () => {
    const id = await start({
      name: "hopeless",
      spec: {
        tasks: [
          { id: "broken", capsule: `${ns}/flaky`, inputs: { name: "never", failTimes: 99 } },
          { id: "after", capsule: `${ns}/slow`, dependsOn: ["broken"] },
        ],
        acceptPermissions: ["artifacts.read", "artifacts.write"],
      },
    });
    const done = await waitForStatus(owner.apiKey, id, ["failed", "completed"]);
    expect(done.status).toBe("failed");
    expect(done.failureReason).toContain("broken");
    expect(done.failureReason).toContain("transient failure 4");
    expect(done.tasks.map((t) => [t.id, t.status, t.attempts])).toEqual([
      ["broken", "failed", 4],
      ["after", "skipped", 0],
    ]);
  });

  it("charges a duplicated queue message once", async () => {
    const id = await start({
      name: "dupe",
      spec: { tasks: [{ id: "d", capsule: `${ns}/slow`, inputs: { sleepMs: 1 } }] },
    });
    const done = await waitForStatus(owner.apiKey, id, ["completed"]);
    const stub = env.PROJECT_COORDINATOR.get(env.PROJECT_COORDINATOR.idFromString(id));
    const attemptId = await runInDurableObject(stub, (_instance: ProjectCoordinator, state) =>
      String(state.storage.sql.exec<{ id: string }>("SELECT id FROM attempts").one().id),
    );
    // The same message again, through the real queue, and a second settlement straight to the coordinator.
    await env.AGENT_TASKS.send({ projectId: id, attemptId });
    const again = await runInDurableObject(stub, (instance: ProjectCoordinator) =>
      instance.settleAttempt(attemptId, {
        status: "succeeded",
        output: {},
        usage: { inputTokens: 500, outputTokens: 500 },
      }),
    );
    expect(again).toEqual({ ok: true, value: { duplicate: true } });
    await new Promise((r) => setTimeout(r, 2500));
    const after = await getProject(owner.apiKey, id);
    expect(after.budget.spentTokens).toBe(done.budget.spentTokens);
    expect(after.tasks[0]?.attempts).toBe(1);
  });

  it("finishes correctly after the coordinator is evicted mid-run", async () => {
    const tasks = Array.from({ length: 6 }, (_, i) => ({
      id: `e${i}`,
      capsule: `${ns}/slow`,
      inputs: { name: `e${i}`, sleepMs: 300 },
      dependsOn: i > 0 ? [`e${i - 1}`] : [],
    }));
    const id = await start({ name: "evicted", spec: { tasks } });
    await waitForStatus(owner.apiKey, id, ["running"]);
    await new Promise((r) => setTimeout(r, 1200));
    await evictDurableObject(env.PROJECT_COORDINATOR.get(env.PROJECT_COORDINATOR.idFromString(id)));
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed"], 60_000);
    expect(done.status).toBe("completed");
    expect(done.tasks.every((t) => t.attempts === 1)).toBe(true);
    expect(done.budget.spentTokens).toBe(done.tasks.reduce((n, t) => n + t.usage.totalTokens, 0));
  }, 90_000);
});

describe("quality gate and human review", () => {
  it("sends a low score to human review, re-runs on request_changes with the feedback, then completes", async () => {
    const id = await start({
      name: "gate",
      spec: { tasks: [{ id: "s", capsule: `${ns}/sloppy` }] },
      autoRemediations: 0,
      qualityThreshold: 0.8,
    });
    const held = await waitForStatus(owner.apiKey, id, ["awaiting_review", "completed", "failed"]);
    expect(held.status).toBe("awaiting_review");
    expect(held.tasks[0]?.score).toBeLessThan(0.8);
    const queue = (await (await api("/v1/review-tasks", { token: owner.apiKey })).json()) as {
      items: { projectId: string; taskId: string }[];
    };
    expect(queue.items).toContainEqual(expect.objectContaining({ projectId: id, taskId: "s" }));

    const stranger = await signup();
    expect(
      (
        await api(`/v1/projects/${id}/tasks/s/review`, {
          method: "POST",
          token: stranger.apiKey,
          json: { decision: "approve" },
        })
      ).status,
    ).toBe(404);
    expect(
      (
        await api(`/v1/projects/${id}/tasks/s/review`, {
          method: "POST",
          token: owner.apiKey,
          json: { decision: "request_changes" },
        })
      ).status,
    ).toBe(400);

    const decided = await api(`/v1/projects/${id}/tasks/s/review`, {
      method: "POST",
      token: owner.apiKey,
      json: { decision: "request_changes", feedback: "add colons and docstrings" },
    });
    expect(decided.status).toBe(200);
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed", "awaiting_review"]);
    expect(done.status).toBe("completed");
    expect(done.tasks[0]?.attempts).toBe(2);
    const r = await report(id);
    expect(r.reviewerDecisions.map((d) => d.decision)).toEqual(["request_changes"]);
    expect(r.tasks[0]?.gates.map((g) => g.score)).toEqual([expect.any(Number), 1]);
    expect(Object.keys(r.tasks[0]?.gates[0]?.subscores ?? {})).toEqual([
      "completeness",
      "correctness",
      "style",
      "documentation",
    ]);
    const cleared = (await (await api("/v1/review-tasks", { token: owner.apiKey })).json()) as {
      items: { projectId: string }[];
    };
    expect(cleared.items.some((i) => i.projectId === id)).toBe(false);
  });

  it("remediates automatically with the gate's feedback when allowed", async () => {
    const id = await start({
      name: "auto",
      spec: { tasks: [{ id: "s", capsule: `${ns}/sloppy` }] },
      autoRemediations: 1,
    });
    const done = await waitForStatus(owner.apiKey, id, ["completed", "failed", "awaiting_review"]);
    expect(done.status).toBe("completed");
    expect(done.tasks[0]?.attempts).toBe(2);
  });

  it("lets a reviewer approve a held task as it is", async () => {
    const id = await start({
      name: "approve",
      spec: { tasks: [{ id: "s", capsule: `${ns}/sloppy` }] },
      autoRemediations: 0,
    });
    await waitForStatus(owner.apiKey, id, ["awaiting_review"]);
    const res = await api(`/v1/projects/${id}/tasks/s/review`, {
      method: "POST",
      token: owner.apiKey,
      json: { decision: "approve" },
    });
    expect(res.status).toBe(200);
    expect((await waitForStatus(owner.apiKey, id, ["completed"])).tasks[0]?.attempts).toBe(1);
    const again = await api(`/v1/projects/${id}/tasks/s/review`, {
      method: "POST",
      token: owner.apiKey,
      json: { decision: "approve" },
    });
    expect(again.status).toBe(409);
  });
});

describe("human review: reject", () => {
  it("fails a held task on reject, with the reviewer's reason, skipping its dependants and failing the project", async () => {
    const id = await start({
      name: "reject",
      spec: {
        tasks: [
          { id: "s", capsule: `${ns}/sloppy` },
          { id: "after", capsule: `${ns}/slow`, dependsOn: ["s"] },
        ],
      },
      autoRemediations: 0,
    });
    await waitForStatus(owner.apiKey, id, ["awaiting_review"]);
    const res = await api(`/v1/projects/${id}/tasks/s/review`, {
      method: "POST",
      token: owner.apiKey,
      json: { decision: "reject", feedback: "not what was asked" },
    });
    expect(res.status).toBe(200);
    const done = await waitForStatus(owner.apiKey, id, ["failed", "completed"]);
    expect(done.status).toBe("failed");
    expect(done.failureReason).toContain("not what was asked");
    expect(done.tasks.map((t) => [t.id, t.status, t.attempts])).toEqual([
      ["s", "failed", 1],
      ["after", "skipped", 0],
    ]);
    expect(done.tasks[0]?.lastError).toBe(`Rejected by ${owner.handle}: not what was asked`);
    const r = await report(id);
    expect(r.reviewerDecisions.map((d) => d.decision)).toEqual(["reject"]);
    expect(r.timeline.filter((e) => e.type === "task.failed" && e.taskId === "s")).toHaveLength(1);
    const queue = (await (await api("/v1/review-tasks", { token: owner.apiKey })).json()) as {
      items: { projectId: string }[];
    };
    expect(queue.items.some((i) => i.projectId === id)).toBe(false);
    // A rejected task can be asked to change (which reopens the project), never approved as it is.
    const approve = await api(`/v1/projects/${id}/tasks/s/review`, {
      method: "POST",
      token: owner.apiKey,
      json: { decision: "approve" },
    });
    expect(approve.status).toBe(409);
  });
});

describe("sandbox", () => {
  it("fails a capsule that calls fetch directly: the isolate has no network", async () => {
    const id = await start({ name: "fetch", spec: { tasks: [{ id: "f", capsule: `${ns}/fetcher` }] } });
    const done = await waitForStatus(owner.apiKey, id, ["failed", "completed"]);
    expect(done.status).toBe("failed");
    expect(done.tasks[0]?.lastError).toMatch(/CAPSULE_FAILED/);
  });

  it("refuses egress to a host the manifest did not declare", async () => {
    const id = await start({ name: "egress", spec: { tasks: [{ id: "g", capsule: `${ns}/egress` }] } });
    const done = await waitForStatus(owner.apiKey, id, ["failed", "completed"]);
    expect(done.status).toBe("failed");
    expect(done.tasks[0]?.lastError).toContain("PERMISSION_DENIED");
    expect(done.tasks[0]?.lastError).toContain("network.egress:undeclared.example.org");
  });
});

describe("project API", () => {
  it("cancels a running project and refuses a second cancel", async () => {
    const tasks = Array.from({ length: 3 }, (_, i) => ({
      id: `c${i}`,
      capsule: `${ns}/slow`,
      inputs: { sleepMs: 500 },
      dependsOn: i > 0 ? [`c${i - 1}`] : [],
    }));
    const id = await start({ name: "cancel", spec: { tasks } });
    const res = await api(`/v1/projects/${id}/cancel`, { method: "POST", token: owner.apiKey });
    expect(res.status).toBe(200);
    const project = (
      (await res.json()) as { project: { status: string; budget: { reservedTokens: number } } }
    ).project;
    expect(project.status).toBe("cancelled");
    expect(project.budget.reservedTokens).toBe(0);
    expect((await api(`/v1/projects/${id}/cancel`, { method: "POST", token: owner.apiKey })).status).toBe(
      409,
    );
  });

  it("keeps projects private to their owner and validates ids and bodies", async () => {
    const id = await start({
      name: "private",
      spec: { tasks: [{ id: "p", capsule: `${ns}/slow`, inputs: { sleepMs: 1 } }] },
    });
    const stranger = await signup();
    expect((await api(`/v1/projects/${id}`, { token: stranger.apiKey })).status).toBe(404);
    expect((await api(`/v1/projects/${id}`)).status).toBe(401);
    expect((await api(`/v1/projects/${id}/report`, { token: stranger.apiKey })).status).toBe(404);
    expect((await api("/v1/projects/not-an-id", { token: owner.apiKey })).status).toBe(400);
    expect(
      (await createProject(owner.apiKey, { name: "x", spec: { tasks: [] }, budget: { tokens: 1 } })).status,
    ).toBe(400);
    expect(
      (
        await createProject(owner.apiKey, {
          name: "x",
          spec: { tasks: [{ id: "a", capsule: `${ns}/slow` }] },
          budget: { tokens: 0 },
        })
      ).status,
    ).toBe(400);
    const mine = (await (await api("/v1/projects", { token: owner.apiKey })).json()) as {
      items: { id: string }[];
    };
    expect(mine.items.map((p) => p.id)).toContain(id);
    expect(
      ((await (await api("/v1/projects", { token: stranger.apiKey })).json()) as { items: unknown[] }).items,
    ).toEqual([]);
  });

  it("refuses a graph whose capsules are unknown or whose permissions were not accepted, naming the tasks", async () => {
    const unknown = await createProject(owner.apiKey, {
      name: "unknown",
      spec: { tasks: [{ id: "u", capsule: `${ns}/does-not-exist` }] },
      budget: { tokens: 1000 },
    });
    expect(unknown.status).toBe(400);
    expect((await errorOf(unknown)).details).toMatchObject({ tasks: ["u"] });
    const unaccepted = await createProject(owner.apiKey, {
      name: "perms",
      spec: { tasks: [{ id: "f", capsule: `${ns}/flaky` }] },
      budget: { tokens: 1000 },
    });
    expect(unaccepted.status).toBe(422);
    expect((await errorOf(unaccepted)).details).toMatchObject({
      missing: ["artifacts.read", "artifacts.write"],
      tasks: ["f"],
    });
    const unknownDep = await createProject(owner.apiKey, {
      name: "dep",
      spec: { tasks: [{ id: "a", capsule: `${ns}/slow`, dependsOn: ["ghost"] }] },
      budget: { tokens: 1000 },
    });
    expect(unknownDep.status).toBe(400);
    expect((await errorOf(unknownDep)).message).toContain('unknown task "ghost"');
  });

  it("streams state changes over a WebSocket", async () => {
    const id = await start({
      name: "ws",
      spec: { tasks: [{ id: "w", capsule: `${ns}/slow`, inputs: { sleepMs: 300 } }] },
    });
    const res = await api(`/v1/projects/${id}/ws`, {
      token: owner.apiKey,
      headers: { upgrade: "websocket" },
    });
    expect(res.status).toBe(101);
    const ws = res.webSocket!;
    const messages: { type: string; eventType?: string }[] = [];
    ws.accept();
    ws.addEventListener("message", (event) => messages.push(JSON.parse(String(event.data))));
    await waitForStatus(owner.apiKey, id, ["completed"]);
    await new Promise((r) => setTimeout(r, 200));
    ws.close();
    expect(messages[0]?.type).toBe("snapshot");
    const types = messages.map((m) => m.eventType);
    expect(types).toContain("task.dispatched");
    expect(types).toContain("gate.scored");
    expect(types).toContain("project.completed");
  });

  it("streams the same events as Server-Sent Events", async () => {
    const id = await start({
      name: "sse",
      spec: { tasks: [{ id: "e", capsule: `${ns}/slow`, inputs: { sleepMs: 1 } }] },
    });
    await waitForStatus(owner.apiKey, id, ["completed"]);
    const res = await api(`/v1/projects/${id}/events`, { token: owner.apiKey });
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("project.completed")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await reader.cancel();
    expect(text).toContain("event: snapshot");
    expect(text).toMatch(/id: \d+\nevent: task.dispatched/);
  });
});

describe("live Server-Sent Events", () => {
  it("pushes events to a stream opened before the project finished", async () => {
    const id = await start({
      name: "sse-live",
      spec: { tasks: [{ id: "l", capsule: `${ns}/slow`, inputs: { sleepMs: 1500 } }] },
    });
    const res = await api(`/v1/projects/${id}/events`, { token: owner.apiKey });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const deadline = Date.now() + 30_000;
    while (!text.includes("event: project.completed") && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    await reader.cancel();
    // The snapshot sent on connect shows the project still running: what followed was pushed as it happened.
    const snapshot = JSON.parse(/event: snapshot\ndata: (.*)\n/.exec(text)?.[1] ?? "null") as {
      status: string;
    };
    expect(snapshot.status).not.toBe("completed");
    expect(text).toMatch(/id: \d+\nevent: gate.scored/);
    expect(text).toMatch(/id: \d+\nevent: project.completed/);
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe("prompt capsules", () => {
  it("fail with MODEL_PROVIDER_NOT_CONFIGURED when no model provider is set, without retrying", async () => {
    const { bundle, upload } = await import("../helpers");
    const res = await upload(
      owner.apiKey,
      await bundle({ name: `${ns}/summarise`, runtime: "prompt", permissions: ["llm"] }),
    );
    expect(res.status).toBe(201);
    const id = await start({
      name: "prompt",
      spec: {
        tasks: [{ id: "p", capsule: `${ns}/summarise`, inputs: { text: "hello" } }],
        acceptPermissions: ["llm"],
      },
    });
    const done = await waitForStatus(owner.apiKey, id, ["failed", "completed"]);
    expect(done.status).toBe("failed");
    expect(done.tasks[0]).toMatchObject({ status: "failed", attempts: 1 });
    expect(done.tasks[0]?.lastError).toContain("MODEL_PROVIDER_NOT_CONFIGURED");
  });
});
