import { beforeAll, describe, expect, it } from "vitest";
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
