import type { CoordinatorCreateInput } from "../../../durable-objects/project-coordinator";
import type {
  AttemptContext,
  CoordinatorResult,
  ModelCall,
  Outcome,
  ProjectSnapshot,
  TaskView,
} from "./types";

export interface ProjectReport {
  project: Pick<
    ProjectSnapshot,
    "id" | "name" | "owner" | "status" | "failureReason" | "createdAt" | "finishedAt"
  >;
  budget: ProjectSnapshot["budget"];
  totals: Record<string, number | null>;
  tasks: (TaskView & { attemptsDetail: unknown[]; gates: unknown[] })[];
  reviewerDecisions: unknown[];
  artifacts: { path: string; size: number }[];
  /** Runner logs, readable at GET /v1/projects/:id/logs/:attemptId. */
  logs: { taskId: string; attemptId: string; size: number }[];
  timeline: { seq: number; type: string; taskId: unknown; at: string; data: unknown }[];
}

/** The coordinator's RPC surface as callers use it (the class implements it). */
export interface CoordinatorApi {
  create(input: CoordinatorCreateInput): Promise<CoordinatorResult<ProjectSnapshot>>;
  snapshot(): Promise<CoordinatorResult<ProjectSnapshot>>;
  confirmEvents(seqs: number[]): Promise<CoordinatorResult<{ confirmed: number }>>;
  startAttempt(attemptId: string, claim?: string): Promise<CoordinatorResult<AttemptContext>>;
  settleAttempt(attemptId: string, outcome: Outcome): Promise<CoordinatorResult<{ duplicate: boolean }>>;
  modelAllowance(attemptId: string): Promise<CoordinatorResult<{ remainingTokens: number }>>;
  recordModelCall(attemptId: string, call: ModelCall): Promise<CoordinatorResult<{ recorded: boolean }>>;
  reviewTask(
    taskId: string,
    decision: "approve" | "reject" | "request_changes",
    feedback: string,
    reviewer: string,
    traceparent?: string,
  ): Promise<CoordinatorResult<ProjectSnapshot>>;
  cancel(by: string, traceparent?: string): Promise<CoordinatorResult<ProjectSnapshot>>;
  setBudget(
    limitTokens: number,
    softPct: number,
    hardPct?: number,
    traceparent?: string,
  ): Promise<CoordinatorResult<ProjectSnapshot>>;
  report(): Promise<CoordinatorResult<ProjectReport>>;
  fetch(request: Request): Promise<Response>;
}

/** A typed stub for one project's coordinator. Project ids are the Durable Object ids (64 hex characters). */
export function coordinator(
  env: { PROJECT_COORDINATOR: DurableObjectNamespace },
  projectId: string,
): CoordinatorApi {
  return env.PROJECT_COORDINATOR.get(
    env.PROJECT_COORDINATOR.idFromString(projectId),
  ) as unknown as CoordinatorApi;
}
