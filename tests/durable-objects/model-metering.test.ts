import { createExecutionContext, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, inject, it } from "vitest";
import type { ProjectCoordinator } from "../../durable-objects/project-coordinator";
import { CapsuleHost } from "../../workers/entrypoints/capsule-host";
import type { CapsuleHostProps } from "../../workers/shared/agents/capabilities";
import { api } from "../helpers";
import { createProject, publishReviewer, publishWorker, signup, waitForStatus } from "../kamachiq-helpers";

// The capsule holds its attempt open until the test has made a model call for it, then writes a clean module.
const HOLDS = `export default { async run(input, ctx) {
  for (let i = 0; i < 300 && (await ctx.artifacts.read("go.txt")) === null; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return { files: [{ path: "m.py", content: '"""Module."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

let owner: Awaited<ReturnType<typeof signup>>;
let capsule = "";

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  capsule = `${owner.handle}/holds`;
  await publishWorker(owner.apiKey, capsule, HOLDS, { permissions: ["artifacts.read", "llm"] });
});

function stubOf(id: string) {
  return env.PROJECT_COORDINATOR.get(env.PROJECT_COORDINATOR.idFromString(id));
}

/** Starts a one-task project and returns it with its attempt once the capsule is running. */
async function startHeld(): Promise<{ id: string; attemptId: string }> {
  const res = await createProject(owner.apiKey, {
    name: "metered",
    spec: { tasks: [{ id: "m", capsule }], acceptPermissions: ["artifacts.read", "llm"] },
    budget: { tokens: 100_000 },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  const { id } = ((await res.json()) as { project: { id: string } }).project;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const running = await runInDurableObject(stubOf(id), (_i: ProjectCoordinator, state) =>
      state.storage.sql.exec<{ id: string }>("SELECT id FROM attempts WHERE status = 'running'").toArray(),
    );
    if (running[0]) return { id, attemptId: running[0].id };
    if (Date.now() > deadline) throw new Error("the attempt never started");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The CapsuleHost the sandbox hands this attempt's capsule, in a deployment with an OpenAI-compatible provider. */
function hostFor(projectId: string, attemptId: string): CapsuleHost {
  const props: CapsuleHostProps = {
    projectId,
    taskId: "m",
    attemptId,
    capsule,
    permissions: ["artifacts.read", "llm"],
  };
  const configured = {
    ...env,
    OPENAI_API_KEY: "sk-test",
    OPENAI_BASE_URL: inject("modelProvider").baseUrl,
  } as Env;
  return new CapsuleHost(Object.assign(createExecutionContext(), { props }), configured);
}

async function release(projectId: string): Promise<void> {
  await env.BUNDLES.put(`projects/${projectId}/artifacts/go.txt`, "go");
}

interface UsageEvent {
  type: string;
  data: Record<string, unknown>;
}

async function usageEvent(id: string): Promise<UsageEvent> {
  const res = await api(`/v1/projects/${id}/report`, { token: owner.apiKey });
  const { report } = (await res.json()) as { report: { timeline: UsageEvent[] } };
  const found = report.timeline.filter((e) => e.type === "usage.tokens");
  expect(found).toHaveLength(1);
  return found[0]!;
}

describe("ctx.llm metering", () => {
  it("adds the tokens the provider reports to the attempt: budget, usage event, account and model charge", async () => {
    // The same capsule and input without a model call: what the agent measures by size alone.
    const plain = await startHeld();
    await release(plain.id);
    const without = await waitForStatus(owner.apiKey, plain.id, ["completed", "failed"]);
    expect(without.status).toBe("completed");

    const held = await startHeld();
    const answer = await hostFor(held.id, held.attemptId).llm({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hello" }],
      maxTokens: 64,
    });
    expect(answer).toMatchObject({ provider: "openai", usage: { inputTokens: 9, outputTokens: 12 } });
    await release(held.id);
    const done = await waitForStatus(owner.apiKey, held.id, ["completed", "failed"]);
    expect(done.status).toBe("completed");

    const before = await usageEvent(plain.id);
    const after = await usageEvent(held.id);
    expect(after.data).toMatchObject({
      model: "gpt-4o-mini",
      modelInputTokens: 9,
      modelOutputTokens: 12,
      inputTokens: Number(before.data.inputTokens) + 9,
      outputTokens: Number(before.data.outputTokens) + 12,
      chargedTokens: Number(before.data.chargedTokens) + 21,
    });
    expect(done.budget.spentTokens).toBe(without.budget.spentTokens + 21);
    expect(done.tasks[0]?.usage.totalTokens).toBe((without.tasks[0]?.usage.totalTokens ?? 0) + 21);

    // MODEL_PRICES prices gpt-4o-mini at $1 per 1,000 tokens in the tests: 21 tokens cost 21,000 micro-USD.
    const deadline = Date.now() + 10_000;
    let charges: { amount: number }[] = [];
    while (charges.length === 0 && Date.now() < deadline) {
      charges = (
        await env.DB.prepare(
          "SELECT amount_micro_usd AS amount FROM ledger_entries WHERE attempt_id = ? AND kind = 'model_charge'",
        )
          .bind(held.attemptId)
          .all<{ amount: number }>()
      ).results;
      if (charges.length === 0) await new Promise((r) => setTimeout(r, 200));
    }
    expect(charges).toEqual([{ amount: 21_000 }]);

    // The account's budget object settles the same tokens the project charged (and the model spend with them).
    const account = env.ACCOUNT_BUDGET.get(env.ACCOUNT_BUDGET.idFromName(owner.id));
    let settled: { settled: number; spent: number; usd: number } | undefined;
    while (Date.now() < deadline + 10_000) {
      settled = await runInDurableObject(
        account,
        (_i, state) =>
          state.storage.sql
            .exec<{ settled: number; spent: number; usd: number }>(
              "SELECT settled, spent_tokens AS spent, spent_micro_usd AS usd FROM reservations WHERE attempt_id = ?",
              held.attemptId,
            )
            .toArray()[0],
      );
      if (settled?.settled === 1) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(settled).toEqual({ settled: 1, spent: done.budget.spentTokens, usd: 21_000 });
  });

  it("refuses a model call once the attempt has ended", async () => {
    const held = await startHeld();
    await release(held.id);
    await waitForStatus(owner.apiKey, held.id, ["completed", "failed"]);
    await expect(
      hostFor(held.id, held.attemptId).llm({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Hi" }],
      }),
    ).rejects.toThrow(/may not call a model/);
  });
});
