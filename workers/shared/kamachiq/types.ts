import { z } from "zod";
import { gateResultSchema } from "./spec";

export const PROJECT_STATUSES = [
  "planning",
  "running",
  "awaiting_review",
  "completed",
  "failed",
  "budget_exhausted",
  "cancelled",
] as const;
export type ProjectStatus = (typeof PROJECT_STATUSES)[number];
export const TERMINAL_PROJECT: readonly ProjectStatus[] = [
  "completed",
  "failed",
  "budget_exhausted",
  "cancelled",
];

export type TaskStatus =
  | "pending"
  | "ready"
  | "queued"
  | "running"
  | "retry_wait"
  | "awaiting_review"
  | "completed"
  | "failed"
  | "skipped"
  | "cancelled";

/** The agent-tasks queue message: just enough to find the attempt; everything else comes from the coordinator. */
export const agentTaskMessageSchema = z
  .object({
    projectId: z.string().regex(/^[a-f0-9]{64}$/),
    attemptId: z.string().regex(/^att_[a-f0-9]{32}$/),
    traceparent: z.string().max(55).optional(),
  })
  .strict();
export type AgentTaskMessage = z.output<typeof agentTaskMessageSchema>;

/** A JSON value: what crosses Durable Object RPC and queue boundaries. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** What an agent needs to run one attempt, handed out by the coordinator. */
export interface AttemptContext {
  projectId: string;
  ownerId: string;
  attemptId: string;
  taskId: string;
  isPlan: boolean;
  capsule: string;
  version: string;
  runtime: string;
  permissions: string[];
  input: { [key: string]: JsonValue };
  successCriteria: string[];
  reservedTokens: number;
  reviewer: { capsule: string; version: string } | null;
}

export const usageSchema = z.object({
  inputTokens: z.int().min(0).max(1_000_000_000),
  outputTokens: z.int().min(0).max(1_000_000_000),
  model: z.string().max(200).optional(),
});

/** One model call a sandboxed capsule made through ctx.llm, as the host metered it from the provider's answer. */
export const modelCallSchema = z
  .object({
    id: z.string().regex(/^mdl_[a-f0-9]{32}$/),
    capsule: z.string().min(1).max(200),
    provider: z.string().min(1).max(32),
    model: z.string().min(1).max(200),
    inputTokens: z.int().min(0).max(1_000_000_000),
    outputTokens: z.int().min(0).max(1_000_000_000),
  })
  .strict();
export type ModelCall = z.output<typeof modelCallSchema>;

/** How an attempt ended, reported by an agent or a runner. Validated at every boundary. */
export const outcomeSchema = z.discriminatedUnion("status", [
  z
    .object({
      status: z.literal("succeeded"),
      output: z.unknown(),
      usage: usageSchema,
      gate: gateResultSchema.optional(),
      gateUsage: usageSchema.optional(),
    })
    .strict(),
  z
    .object({
      status: z.literal("failed"),
      error: z
        .object({ code: z.string().max(64), message: z.string().max(4000), retryable: z.boolean() })
        .strict(),
      usage: usageSchema.default({ inputTokens: 0, outputTokens: 0 }),
    })
    .strict(),
]);
export type Outcome = z.input<typeof outcomeSchema>;

export interface TaskView {
  id: string;
  capsule: string;
  version: string;
  runtime: string;
  status: TaskStatus;
  dependsOn: string[];
  attempts: number;
  score: number | null;
  usage: { inputTokens: number; outputTokens: number; totalTokens: number };
  lastError: string | null;
}

export interface ProjectSnapshot {
  id: string;
  name: string;
  owner: string;
  status: ProjectStatus;
  failureReason: string | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
  maxParallelAgents: number;
  qualityThreshold: number;
  tasks: TaskView[];
  budget: { limitTokens: number; reservedTokens: number; spentTokens: number };
}

/** DO RPC drops custom error fields, so expected failures travel as results. */
export type CoordinatorResult<T> =
  | { ok: true; value: T }
  | { ok: false; code: string; message: string; details?: JsonValue };

/** Rough token count for work that calls no model: about four bytes a token, as tokenizers average on code. */
export function estimateTokens(value: unknown): number {
  const text = typeof value === "string" ? value : JSON.stringify(value ?? null);
  return Math.ceil(new TextEncoder().encode(text).length / 4);
}
