import type { Database } from "../db/client";
import { parseBundle } from "../domain/bundle";
import type { CapsuleManifest } from "../domain/manifest";
import { AppError } from "../errors";
import { type GateResult, gateResultSchema } from "../kamachiq/spec";
import { type AttemptContext, estimateTokens, type Outcome } from "../kamachiq/types";
import { bundleLimits } from "../marketplace/limits";
import { loadPublishedBundle } from "../marketplace/verified-bundles";
import type { CapsuleHostProps } from "./capabilities";
import { callModel, modelGatewayEnv } from "./model-gateway";
import { runInSandbox } from "./sandbox";

export interface AgentEnv {
  BUNDLES: R2Bucket;
  LOADER: WorkerLoader;
  MAX_BUNDLE_BYTES: string;
  MAX_UNPACKED_BYTES: string;
  MAX_BUNDLE_ENTRIES: string;
}

/** Creates the CapsuleHost binding for one capsule run (ctx.exports.CapsuleHost with props). */
export type HostFactory = (props: CapsuleHostProps) => Fetcher;

/** The compatibility date capsules run on; fixed so a platform upgrade never changes a published capsule. */
const CAPSULE_COMPATIBILITY_DATE = "2026-10-01";

async function loadCapsule(env: AgentEnv, db: Database, name: string, version: string) {
  const { bytes } = await loadPublishedBundle(env, db, name, version);
  const bundle = await parseBundle(bytes, bundleLimits(env));
  return { manifest: bundle.manifest, files: bundle.contents };
}

/** Replaces dependency output keys with the outputs themselves, read from R2. */
export async function withDependencyOutputs(
  env: AgentEnv,
  input: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const refs = (input.dependencies ?? {}) as Record<string, string>;
  const outputs: Record<string, unknown> = {};
  for (const [taskId, key] of Object.entries(refs)) {
    const object = await env.BUNDLES.get(key);
    outputs[taskId] = object ? JSON.parse(await object.text()) : null;
  }
  return { ...input, dependencies: outputs };
}

function failed(
  code: string,
  message: string,
  retryable: boolean,
  usage = { inputTokens: 0, outputTokens: 0 },
): Outcome {
  return { status: "failed", error: { code, message: message.slice(0, 4000), retryable }, usage };
}

/** Renders a prompt template: `{{name}}` is replaced with the input field (JSON for non-strings). */
function renderPrompt(template: string, input: Record<string, unknown>): string {
  return template.replace(/\{\{\s*([A-Za-z0-9_.]+)\s*\}\}/g, (_, key: string) => {
    const value = key
      .split(".")
      .reduce<unknown>(
        (v, k) => (v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined),
        input,
      );
    return typeof value === "string" ? value : JSON.stringify(value ?? null);
  });
}

/**
 * Runs one attempt of a worker, planner or prompt capsule and scores it at the quality gate. Runner capsules
 * are not run here: the caller hands them to external runners. Never throws for the capsule's own failures;
 * infrastructure errors propagate so the queue retries the message.
 */
export async function executeAttempt(
  env: AgentEnv,
  db: Database,
  host: HostFactory,
  attempt: AttemptContext,
): Promise<Outcome> {
  const capsule = await loadCapsule(env, db, attempt.capsule, attempt.version);
  const input = await withDependencyOutputs(env, attempt.input);
  const inputTokens = estimateTokens(input);
  let output: unknown;
  let usage: { inputTokens: number; outputTokens: number; model?: string };

  if (capsule.manifest.spec.runtime === "prompt") {
    const template = new TextDecoder().decode(
      capsule.files.get(capsule.manifest.spec.entrypoint) ?? new Uint8Array(),
    );
    try {
      const response = await callModel(modelGatewayEnv(env), {
        model: typeof input.model === "string" ? input.model : "default",
        messages: [{ role: "user", content: renderPrompt(template, input) }],
        maxTokens: Math.max(1, Math.min(64_000, attempt.reservedTokens)),
      });
      output = { text: response.text };
      usage = { ...response.usage, model: response.model };
    } catch (error) {
      if (error instanceof AppError)
        return failed(error.code, error.message, error.code === "UPSTREAM_FAILED");
      throw error;
    }
  } else {
    const result = await runInSandbox({
      loader: env.LOADER,
      manifest: capsule.manifest,
      files: capsule.files,
      host: host(hostProps(attempt, attempt.capsule, capsule.manifest)),
      input,
      compatibilityDate: CAPSULE_COMPATIBILITY_DATE,
    });
    if (!result.ok) {
      return failed("CAPSULE_FAILED", `${result.error.name}: ${result.error.message}`, true, {
        inputTokens,
        outputTokens: 0,
      });
    }
    output = result.output;
    usage = { inputTokens, outputTokens: estimateTokens(output) };
  }

  if (usage.inputTokens + usage.outputTokens > attempt.reservedTokens) {
    return failed(
      "TOKEN_BUDGET_EXCEEDED",
      `The task used ${usage.inputTokens + usage.outputTokens} tokens, more than its reservation of ${attempt.reservedTokens}`,
      false,
      { inputTokens: Math.min(usage.inputTokens, attempt.reservedTokens), outputTokens: 0 },
    );
  }
  if (attempt.isPlan || !attempt.reviewer) return { status: "succeeded", output, usage };
  const gate = await runGate(env, db, host, attempt, output);
  if (!gate.ok) return failed("GATE_FAILED", gate.message, true, usage);
  return { status: "succeeded", output, usage, gate: gate.result, gateUsage: gate.usage };
}

function hostProps(attempt: AttemptContext, capsule: string, manifest: CapsuleManifest): CapsuleHostProps {
  return {
    projectId: attempt.projectId,
    taskId: attempt.taskId,
    attemptId: attempt.attemptId,
    capsule,
    permissions: manifest.spec.permissions,
  };
}

/** Scores an output with the project's reviewer capsule against the rubric and the task's success criteria. */
export async function runGate(
  env: AgentEnv,
  db: Database,
  host: HostFactory,
  attempt: AttemptContext,
  output: unknown,
): Promise<
  | { ok: true; result: GateResult; usage: { inputTokens: number; outputTokens: number } }
  | { ok: false; message: string }
> {
  const reviewer = attempt.reviewer!;
  const capsule = await loadCapsule(env, db, reviewer.capsule, reviewer.version);
  const input = {
    task: { id: attempt.taskId, capsule: attempt.capsule, successCriteria: attempt.successCriteria },
    input: attempt.input,
    output,
  };
  const result = await runInSandbox({
    loader: env.LOADER,
    manifest: capsule.manifest,
    files: capsule.files,
    host: host(hostProps(attempt, reviewer.capsule, capsule.manifest)),
    input,
    compatibilityDate: CAPSULE_COMPATIBILITY_DATE,
  });
  if (!result.ok)
    return { ok: false, message: `The reviewer ${reviewer.capsule} failed: ${result.error.message}` };
  const parsed = gateResultSchema.safeParse(result.output);
  if (!parsed.success) {
    return {
      ok: false,
      message: `The reviewer ${reviewer.capsule} returned no rubric scores: ${parsed.error.issues[0]?.message}`,
    };
  }
  return {
    ok: true,
    result: parsed.data,
    usage: { inputTokens: estimateTokens(input), outputTokens: estimateTokens(result.output) },
  };
}
