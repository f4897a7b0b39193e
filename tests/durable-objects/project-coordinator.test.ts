import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { ProjectCoordinator } from "../../durable-objects/project-coordinator";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";
import type { CoordinatorApi } from "../../workers/shared/kamachiq/coordinator-client";
import { api, errorOf } from "../helpers";
import { createProject, publishReviewer, publishWorker, signup, waitForStatus } from "../kamachiq-helpers";

const GOOD = `export default { async run(input) {
  const name = String(input.name ?? "module");
  return { files: [{ path: name + ".py", content: '"""' + name + '."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

let owner: Awaited<ReturnType<typeof signup>>;
let ns = "";

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  ns = owner.handle;
  await publishWorker(owner.apiKey, `${ns}/good`, GOOD);
});

describe("a project with an explicit task graph", () => {
  it("runs every task through the gate and completes", async () => {
    const res = await createProject(owner.apiKey, {
      name: "three tasks",
      spec: {
        tasks: [
          { id: "a", capsule: `${ns}/good@^1`, inputs: { name: "a" }, successCriteria: ["file:a.py"] },
          { id: "b", capsule: `${ns}/good@^1`, inputs: { name: "b" }, dependsOn: ["a"] },
          { id: "c", capsule: `${ns}/good`, inputs: { name: "c" }, dependsOn: ["a", "b"] },
        ],
      },
      budget: { tokens: 100_000 },
    });
    expect(res.status, await res.clone().text()).toBe(201);
    const { project } = (await res.json()) as { project: { id: string; status: string } };
    const done = await waitForStatus(owner.apiKey, project.id, ["completed", "failed"]);
    expect(done.status).toBe("completed");
    expect(done.tasks.map((t) => [t.id, t.status, t.score])).toEqual([
      ["a", "completed", 1],
      ["b", "completed", 1],
      ["c", "completed", 1],
    ]);
    expect(done.budget.spentTokens).toBeGreaterThan(0);
    expect(done.budget.reservedTokens).toBe(0);
    expect(done.budget.spentTokens).toBe(done.tasks.reduce((n, t) => n + t.usage.totalTokens, 0));
    const detail = (await (await api(`/v1/capsules/${ns}/good`)).json()) as {
      capsule: { executionCount: number };
    };
    expect(detail.capsule.executionCount).toBe(3);
  });

  it("rejects a cyclic graph naming the tasks and creates nothing", async () => {
    const before = (await (await api("/v1/projects", { token: owner.apiKey })).json()) as {
      items: unknown[];
    };
    const res = await createProject(owner.apiKey, {
      name: "cycle",
      spec: {
        tasks: [
          { id: "x", capsule: `${ns}/good`, dependsOn: ["z"] },
          { id: "y", capsule: `${ns}/good`, dependsOn: ["x"] },
          { id: "z", capsule: `${ns}/good`, dependsOn: ["y"] },
        ],
      },
      budget: { tokens: 1000 },
    });
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.message).toContain("cycle");
    expect((error.details as { cycle: string[] }).cycle).toHaveLength(4);
    const after = (await (await api("/v1/projects", { token: owner.apiKey })).json()) as { items: unknown[] };
    expect(after.items.length).toBe(before.items.length);
  });
  it("rejects a graph that uses a task id twice, naming the task, and creates nothing", async () => {
    const before = (await (await api("/v1/projects", { token: owner.apiKey })).json()) as {
      items: unknown[];
    };
    const res = await createProject(owner.apiKey, {
      name: "duplicate",
      spec: {
        tasks: [
          { id: "a", capsule: `${ns}/good` },
          { id: "twice", capsule: `${ns}/good`, dependsOn: ["a"] },
          { id: "twice", capsule: `${ns}/good` },
        ],
      },
      budget: { tokens: 1000 },
    });
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.message).toContain('task id "twice" is used twice');
    expect(error.details).toMatchObject({
      tasks: ["twice"],
      problems: [{ task: "twice", problem: "duplicate_id" }],
    });
    const after = (await (await api("/v1/projects", { token: owner.apiKey })).json()) as { items: unknown[] };
    expect(after.items.length).toBe(before.items.length);
  });

  it("rejects a task that depends on itself, naming it", async () => {
    const res = await createProject(owner.apiKey, {
      name: "self",
      spec: {
        tasks: [
          { id: "a", capsule: `${ns}/good` },
          { id: "loop", capsule: `${ns}/good`, dependsOn: ["a", "loop"] },
        ],
      },
      budget: { tokens: 1000 },
    });
    expect(res.status).toBe(400);
    const error = await errorOf(res);
    expect(error.message).toContain('task "loop" depends on itself');
    expect(error.details).toMatchObject({
      tasks: ["loop"],
      problems: [{ task: "loop", problem: "self_dependency" }],
    });
  });
});

describe("event hand-off to the analytics store", () => {
  const stubOf = (id: string) => env.PROJECT_COORDINATOR.get(env.PROJECT_COORDINATOR.idFromString(id));
  const states = (id: string) =>
    runInDurableObject(stubOf(id), (_instance: ProjectCoordinator, state) =>
      state.storage.sql
        .exec<{ seq: number; sent: number }>("SELECT seq, sent FROM events ORDER BY seq")
        .toArray(),
    );
  const storedIds = async (projectId: string) =>
    (
      await queryRows(
        env,
        sql`SELECT DISTINCT id FROM events WHERE project_id = ${projectId}`,
        z.object({ id: z.string() }),
      )
    ).map((r) => r.id);

  async function until<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
    const deadline = Date.now() + 20_000;
    let value = await read();
    while (!done(value) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      value = await read();
    }
    return value;
  }

  async function finishedProject(): Promise<string> {
    const res = await createProject(owner.apiKey, {
      name: "hand-off",
      spec: { tasks: [{ id: "a", capsule: `${ns}/good`, inputs: { name: "a" } }] },
      budget: { tokens: 100_000 },
    });
    expect(res.status).toBe(201);
    const { project } = (await res.json()) as { project: { id: string } };
    expect((await waitForStatus(owner.apiKey, project.id, ["completed", "failed"])).status).toBe("completed");
    return project.id;
  }

  it("keeps every event until the consumer confirms it stored, then marks it so", async () => {
    const id = await finishedProject();
    const rows = await until(
      () => states(id),
      (r) => r.length > 0 && r.every((e) => e.sent === 2),
    );
    expect(rows.every((e) => e.sent === 2)).toBe(true);
    const stored = await storedIds(id);
    expect(stored.sort()).toEqual(rows.map((e) => `${id}:${e.seq}`).sort());
  });

  it("sends an event again when the queue lost it, and the store keeps one copy", async () => {
    const id = await finishedProject();
    await until(
      () => states(id),
      (r) => r.length > 0 && r.every((e) => e.sent === 2),
    );
    // An event handed to the queue a minute ago whose message never reached the consumer.
    const seq = await runInDurableObject(stubOf(id), (_instance: ProjectCoordinator, state) => {
      state.storage.sql.exec(
        "INSERT INTO events (type, task_id, data, created_at, sent, sent_at) VALUES ('task.status', 'a', '{\"status\":\"completed\"}', ?, 1, ?)",
        new Date().toISOString(),
        Date.now() - 60_000,
      );
      return state.storage.sql.exec<{ seq: number }>("SELECT max(seq) AS seq FROM events").one().seq;
    });
    expect(await runDurableObjectAlarm(stubOf(id))).toBe(true);
    const stored = await until(
      () => storedIds(id),
      (ids) => ids.includes(`${id}:${seq}`),
    );
    expect(stored).toContain(`${id}:${seq}`);
    const rows = await until(
      () => states(id),
      (r) => r.every((e) => e.sent === 2),
    );
    expect(rows.find((e) => e.seq === seq)?.sent).toBe(2);
    const [copies] = await queryRows(
      env,
      sql`SELECT count() AS n FROM events WHERE id = ${`${id}:${seq}`}`,
      z.object({ n: z.coerce.number() }),
    );
    expect(copies?.n).toBe(1);
  });

  it("waits twice as long before each further resend of an event that stays unconfirmed", async () => {
    const id = await finishedProject();
    await until(
      () => states(id),
      (r) => r.length > 0 && r.every((e) => e.sent === 2),
    );
    // EVENT_RESEND_MS is 2 s in tests. An event already sent again twice waits 4 x 2 s before the third resend.
    const row = (seq: number) =>
      runInDurableObject(stubOf(id), (_instance: ProjectCoordinator, state) =>
        state.storage.sql
          .exec<{ sent: number; sent_at: number; resends: number }>(
            "SELECT sent, sent_at, resends FROM events WHERE seq = ?",
            seq,
          )
          .one(),
      );
    const insert = (sentAgo: number) =>
      runInDurableObject(stubOf(id), (_instance: ProjectCoordinator, state) => {
        state.storage.sql.exec(
          "INSERT INTO events (type, task_id, data, created_at, sent, sent_at, resends) VALUES ('task.status', 'a', '{\"status\":\"completed\"}', ?, 1, ?, 2)",
          new Date().toISOString(),
          Date.now() - sentAgo,
        );
        return state.storage.sql.exec<{ seq: number }>("SELECT max(seq) AS seq FROM events").one().seq;
      });
    const alarmNow = () =>
      runInDurableObject(stubOf(id), async (_instance: ProjectCoordinator, state) => {
        await state.storage.setAlarm(Date.now());
      }).then(() => runDurableObjectAlarm(stubOf(id)));

    const notYet = await insert(5_000);
    const before = await row(notYet);
    await alarmNow();
    expect(await row(notYet)).toEqual(before);

    const due = await insert(9_000);
    await alarmNow();
    expect((await row(due)).resends).toBe(3);
    const stored = await until(
      () => storedIds(id),
      (ids) => ids.includes(`${id}:${due}`),
    );
    expect(stored).toContain(`${id}:${due}`);
  });

  it("confirms idempotently, ignoring numbers it does not hold, and refuses an unknown project", async () => {
    const id = await finishedProject();
    const stub = stubOf(id) as unknown as CoordinatorApi;
    await until(
      () => states(id),
      (r) => r.length > 0 && r.every((e) => e.sent === 2),
    );
    const again = await stub.confirmEvents([1, 2, 999_999, -1, 1.5]);
    expect(again).toEqual({ ok: true, value: { confirmed: 0 } });
    const unknown = env.PROJECT_COORDINATOR.get(
      env.PROJECT_COORDINATOR.newUniqueId(),
    ) as unknown as CoordinatorApi;
    expect(await unknown.confirmEvents([1])).toMatchObject({ ok: false, code: "NOT_FOUND" });
  });
});
