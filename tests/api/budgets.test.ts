import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { api, errorOf } from "../helpers";
import {
  createProject,
  getProject,
  publishReviewer,
  publishWorker,
  signup,
  waitForStatus,
} from "../kamachiq-helpers";

/** About `bytes` of output: each run really spends ~6,500 tokens with the gate, against an 8,000 reservation. */
const VERBOSE = `export default { async run(input) {
  const line = "# " + "x".repeat(70) + "\\n";
  return { files: [{ path: "notes.md", content: line.repeat(Math.ceil(Number(input.bytes) / line.length)) }] };
} };`;

let ns = "";
let author: Awaited<ReturnType<typeof signup>>;

beforeAll(async () => {
  await publishReviewer();
  author = await signup();
  ns = author.handle;
  await publishWorker(author.apiKey, `${ns}/verbose`, VERBOSE, { tokens: 4000 });
});

function putBudget(token: string, scope: string, body: Record<string, unknown>): Promise<Response> {
  return api(`/v1/budgets/${scope}`, { method: "PUT", token, json: body });
}

async function launch(token: string, tasks: number): Promise<string> {
  const res = await createProject(token, {
    name: "budgeted",
    spec: {
      tasks: Array.from({ length: tasks }, (_, i) => ({
        id: `t${i}`,
        capsule: `${ns}/verbose`,
        inputs: { bytes: 12_000 },
      })),
    },
    budget: { tokens: 1_000_000 },
    maxParallelAgents: 1,
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { project: { id: string } }).project.id;
}

interface AccountStatus {
  limitTokens: number | null;
  spentTokens: number;
  reservedTokens: number;
  alerts: { level: string }[];
}

describe("account budgets", () => {
  it("stop every project of the account at the hard limit, exactly, and alert at the soft share", async () => {
    const owner = await signup();
    const set = await putBudget(owner.apiKey, "account", { limitTokens: 20_000, softPct: 50, hardPct: 100 });
    expect(set.status).toBe(200);
    // Two projects share the 20,000: after two runs (~13,000 spent) no third 8,000 reservation fits.
    const [a, b] = [await launch(owner.apiKey, 3), await launch(owner.apiKey, 3)];
    const doneA = await waitForStatus(owner.apiKey, a, ["budget_exhausted", "completed", "failed"], 60_000);
    const doneB = await waitForStatus(owner.apiKey, b, ["budget_exhausted", "completed", "failed"], 60_000);
    expect([doneA.status, doneB.status]).toEqual(["budget_exhausted", "budget_exhausted"]);
    expect(doneA.failureReason ?? doneB.failureReason).toContain("monthly token budget");
    const completed = [...doneA.tasks, ...doneB.tasks].filter((t) => t.status === "completed").length;
    expect(completed).toBe(2);
    const status = (
      (await (await api("/v1/budgets/account", { token: owner.apiKey })).json()) as { budget: AccountStatus }
    ).budget;
    expect(status.spentTokens).toBe(doneA.budget.spentTokens + doneB.budget.spentTokens);
    expect(status.spentTokens).toBeLessThanOrEqual(20_000);
    expect(status.reservedTokens).toBe(0);
    expect(status.alerts.map((x) => x.level).sort()).toEqual(["hard", "soft"]);
  }, 90_000);

  it("leaves accounts without a budget unlimited", async () => {
    const owner = await signup();
    const id = await launch(owner.apiKey, 2);
    expect((await waitForStatus(owner.apiKey, id, ["completed", "failed", "budget_exhausted"])).status).toBe(
      "completed",
    );
    const status = (
      (await (await api("/v1/budgets/account", { token: owner.apiKey })).json()) as {
        budget: AccountStatus & { configured: boolean };
      }
    ).budget;
    expect(status.configured).toBe(false);
    expect(status.spentTokens).toBeGreaterThan(10_000);
  });

  it("validates bodies and keeps other accounts to admins", async () => {
    const owner = await signup();
    const other = await signup();
    expect((await putBudget(owner.apiKey, "account", {})).status).toBe(400);
    expect(
      (await putBudget(owner.apiKey, "account", { limitTokens: 10, softPct: 90, hardPct: 80 })).status,
    ).toBe(400);
    expect((await putBudget(owner.apiKey, "account", { limitTokens: -1 })).status).toBe(400);
    expect((await putBudget(owner.apiKey, "galaxy", { limitTokens: 10 })).status).toBe(400);
    expect((await putBudget(owner.apiKey, `account:${other.handle}`, { limitTokens: 10 })).status).toBe(403);
    expect((await putBudget(owner.apiKey, `account:${owner.handle}`, { limitUsd: 12.5 })).status).toBe(200);
    const asAdmin = await putBudget(env.SOMA_ADMIN_TOKEN, `account:${other.handle}`, { limitTokens: 10 });
    expect(asAdmin.status).toBe(403);
    expect((await api("/v1/budgets/account", { method: "PUT", json: { limitTokens: 1 } })).status).toBe(401);
  });
});

describe("project budgets", () => {
  it("lowers a running project's limit so it stops with spent <= limit", async () => {
    const owner = await signup();
    const id = await launch(owner.apiKey, 4);
    await waitForStatus(owner.apiKey, id, ["running"]);
    const res = await putBudget(owner.apiKey, `project:${id}`, { limitTokens: 9_000, softPct: 50 });
    expect(res.status).toBe(200);
    const done = await waitForStatus(owner.apiKey, id, ["budget_exhausted", "completed"], 60_000);
    expect(done.status).toBe("budget_exhausted");
    expect(done.budget.limitTokens).toBe(9_000);
    expect(done.budget.spentTokens).toBeLessThanOrEqual(9_000);
    const report = (await (await api(`/v1/projects/${id}/report`, { token: owner.apiKey })).json()) as {
      report: { timeline: { type: string; data: { level?: string } }[] };
    };
    expect(report.report.timeline.some((e) => e.type === "budget.threshold" && e.data.level === "soft")).toBe(
      true,
    );
  }, 90_000);

  it("stops a project at the hardPct share of its limit", async () => {
    const owner = await signup();
    const id = await launch(owner.apiKey, 4);
    await waitForStatus(owner.apiKey, id, ["running"]);
    // A cap of 10,000 (50% of 20,000): one ~6,500-token run fits, the next 8,000 reservation does not.
    const res = await putBudget(owner.apiKey, `project:${id}`, {
      limitTokens: 20_000,
      softPct: 40,
      hardPct: 50,
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { budget: { limitTokens: number; hardPct: number } }).budget).toMatchObject(
      { limitTokens: 10_000, hardPct: 50 },
    );
    const done = await waitForStatus(owner.apiKey, id, ["budget_exhausted", "completed"], 60_000);
    expect(done.status).toBe("budget_exhausted");
    expect(done.budget.limitTokens).toBe(10_000);
    expect(done.budget.spentTokens).toBeLessThanOrEqual(10_000);
    expect(done.tasks.filter((t) => t.status === "completed")).toHaveLength(1);
  }, 90_000);

  it("refuses money limits on projects, other people's projects and finished projects", async () => {
    const owner = await signup();
    const stranger = await signup();
    const id = await launch(owner.apiKey, 1);
    expect((await putBudget(owner.apiKey, `project:${id}`, { limitUsd: 5 })).status).toBe(400);
    expect((await putBudget(stranger.apiKey, `project:${id}`, { limitTokens: 5 })).status).toBe(404);
    await waitForStatus(owner.apiKey, id, ["completed"]);
    const late = await putBudget(owner.apiKey, `project:${id}`, { limitTokens: 50_000 });
    expect(late.status).toBe(409);
    expect((await errorOf(late)).code).toBe("INVALID_STATE");
    expect((await getProject(owner.apiKey, id)).status).toBe("completed");
  });
});
