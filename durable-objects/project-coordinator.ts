import { DurableObject } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import { database, newId, nowIso } from "../workers/shared/db/client";
import { projects, reviewTasks } from "../workers/shared/db/schema";
import { recordExecution } from "../workers/shared/economics/ledger";
import { modelPrices } from "../workers/shared/economics/pricing";
import { AppError } from "../workers/shared/errors";
import { flushOutbox } from "../workers/shared/events/outbox";
import type { CoordinatorApi, ProjectReport } from "../workers/shared/kamachiq/coordinator-client";
import { type PinnedTask, planTasks } from "../workers/shared/kamachiq/planning";
import { type GateResult, gateScore, plannerOutputSchema } from "../workers/shared/kamachiq/spec";
import {
  type AgentTaskMessage,
  type AttemptContext,
  type CoordinatorResult,
  type JsonValue,
  type ModelCall,
  modelCallSchema,
  type Outcome,
  outcomeSchema,
  type ProjectSnapshot,
  type ProjectStatus,
  type TaskStatus,
  type TaskView,
  TERMINAL_PROJECT,
} from "../workers/shared/kamachiq/types";
import {
  type AcceptedPrice,
  acceptedPriceSchema,
  requireAcceptedPrices,
} from "../workers/shared/marketplace/price-acceptance";
import {
  type LogFields,
  Logger,
  setDefaultLogLevel,
  traceFields,
} from "../workers/shared/observability/logger";
import { continueTrace, formatTraceparent, parseTraceparent } from "../workers/shared/observability/trace";
import type { AccountBudget } from "./account-budget";
import { migrateCoordinatorSchema } from "./project-coordinator.schema";

/** Everything the coordinator needs to start a project; the graph (or planner) is already pinned. */
export interface CoordinatorCreateInput {
  id: string;
  name: string;
  ownerId: string;
  ownerHandle: string;
  limitTokens: number;
  maxParallelAgents: number;
  qualityThreshold: number;
  autoRemediations: number;
  acceptPermissions: string[];
  /** Prices the owner accepted at creation: paid capsules a planner adds must be among them (or installed). */
  acceptPrices?: AcceptedPrice[];
  reviewer: { capsule: string; version: string; tokenEstimate: number } | null;
  /** Cap on what the project may spend (paid capsules, model tokens), in micro-USD; null for none. */
  maxSpendMicroUsd: number | null;
  /** True when `tasks` holds only the planning task whose output becomes the graph. */
  planning: boolean;
  tasks: PinnedTask[];
  /** The creating request's W3C traceparent; the project's agent tasks, runner jobs and events continue it. */
  traceparent?: string;
}

type Row = Record<string, SqlStorageValue>;

/** A ready task picked to start, with the attempt id it will get and the tokens it reserves. */
interface Candidate {
  taskId: string;
  attemptId: string;
  tokens: number;
  microUsd: number;
}

/** At most this many failed attempts per task before it fails for good (the first run plus three retries). */
const MAX_FAILURES = 4;
const MAX_HUMAN_REMEDIATIONS = 5;
const ACTIVE_ATTEMPT = "('dispatching','queued','running','settling')";
/** An unconfirmed event's resend wait doubles with each resend, up to 2^this x EVENT_RESEND_MS. */
const MAX_RESEND_DOUBLINGS = 6;

function ok<T>(value: T): CoordinatorResult<T> {
  return { ok: true, value };
}

function refuse(code: string, message: string, details?: JsonValue): CoordinatorResult<never> {
  return { ok: false, code, message, ...(details === undefined ? {} : { details }) };
}

/**
 * One KAMACHIQ project. Holds the task graph, attempts, budget ledger, reviews and event log as SQLite rows and
 * drives the project forward: reserve budget, dispatch ready tasks to the agent-tasks queue (never more than
 * maxParallelAgents at once), settle results exactly once per attempt, gate quality, retry with backoff, and
 * stream every change to WebSocket and SSE clients and to the events queue. Each step is idempotent, so a
 * duplicate message or an eviction between any two lines leaves consistent state.
 */
export class ProjectCoordinator extends DurableObject<Env> implements CoordinatorApi {
  private readonly sql: SqlStorage;
  private readonly streams = new Set<WritableStreamDefaultWriter<Uint8Array>>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    setDefaultLogLevel(env.LOG_LEVEL);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => migrateCoordinatorSchema(ctx.storage.sql));
  }

  // ---- RPC API ------------------------------------------------------------------------------------------

  /** Creates the project once; a repeated call with the same id returns the existing project. */
  async create(input: CoordinatorCreateInput): Promise<CoordinatorResult<ProjectSnapshot>> {
    if (this.project()) return ok(this.snapshotNow());
    const now = nowIso();
    const planning = input.planning;
    // Stored in the canonical form: the queue message schemas hold a version-00 header's 55 characters.
    const trace = parseTraceparent(input.traceparent);
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        `INSERT INTO project (id, name, owner_id, owner_handle, status, limit_tokens, max_parallel, quality_threshold,
           auto_remediations, accept_permissions, reviewer, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        input.id,
        input.name,
        input.ownerId,
        input.ownerHandle,
        planning ? "planning" : "running",
        input.limitTokens,
        input.maxParallelAgents,
        input.qualityThreshold,
        input.autoRemediations,
        JSON.stringify(input.acceptPermissions),
        input.reviewer ? JSON.stringify(input.reviewer) : null,
        now,
        now,
      );
      this.sql.exec("UPDATE project SET accept_prices = ?", JSON.stringify(input.acceptPrices ?? []));
      this.sql.exec(
        "UPDATE project SET max_spend_micro_usd = ?, traceparent = ?",
        input.maxSpendMicroUsd,
        trace ? formatTraceparent(trace) : null,
      );
      this.emit("project.created", null, {
        name: input.name,
        status: planning ? "planning" : "running",
        tasks: input.tasks.length,
        limitTokens: input.limitTokens,
        planning,
      });
      this.insertTasks(input.tasks, planning);
    });
    await this.advance();
    return ok(this.snapshotNow());
  }

  async snapshot(): Promise<CoordinatorResult<ProjectSnapshot>> {
    if (!this.project()) return refuse("NOT_FOUND", "No such project");
    return ok(this.snapshotNow());
  }

  /**
   * The analytics consumer's confirmation that these events (by sequence number) are stored: they are never
   * sent again. Idempotent; unknown numbers are ignored.
   */
  async confirmEvents(seqs: number[]): Promise<CoordinatorResult<{ confirmed: number }>> {
    if (!this.project()) return refuse("NOT_FOUND", "No such project");
    const valid = [...new Set(seqs.filter((n) => Number.isSafeInteger(n) && n > 0))];
    let confirmed = 0;
    this.ctx.storage.transactionSync(() => {
      for (let i = 0; i < valid.length; i += 50) {
        const part = valid.slice(i, i + 50);
        confirmed += this.sql.exec(
          `UPDATE events SET sent = 2 WHERE sent < 2 AND seq IN (${part.map(() => "?").join(",")})`,
          ...part,
        ).rowsWritten;
      }
    });
    return ok({ confirmed });
  }

  /**
   * Hands an agent what it needs for an attempt. An agent passes `claim` (its queue message id): the attempt
   * runs for one message only, so a duplicate message (another id) is refused while the attempt runs, and
   * only a redelivery of the same message, after its agent failed, runs it again. Callers without a claim
   * (runner claims, heartbeats and completions) get the running attempt's context and renew its lease.
   */
  async startAttempt(attemptId: string, claim?: string): Promise<CoordinatorResult<AttemptContext>> {
    const project = this.project();
    const attempt = this.row("SELECT * FROM attempts WHERE id = ?", attemptId);
    if (!project || !attempt) return refuse("NOT_FOUND", `Unknown attempt ${attemptId}`);
    if (!["dispatching", "queued", "running"].includes(String(attempt.status))) {
      return refuse("INVALID_STATE", `Attempt ${attemptId} is ${attempt.status}`, {
        status: String(attempt.status),
      });
    }
    if (claim !== undefined && attempt.status === "running" && attempt.claim !== claim) {
      return refuse("INVALID_STATE", `Attempt ${attemptId} is already running for another delivery`, {
        status: "running",
      });
    }
    const task = this.row("SELECT * FROM tasks WHERE id = ?", attempt.task_id)!;
    const lease = Date.now() + this.leaseMs();
    this.ctx.storage.transactionSync(() => {
      if (attempt.status !== "running") {
        this.sql.exec(
          "UPDATE attempts SET status = 'running', started_at = ?, lease_until = ?, claim = ? WHERE id = ?",
          nowIso(),
          lease,
          claim ?? null,
          attemptId,
        );
        this.setTaskStatus(String(task.id), "running");
        this.emit("task.started", String(task.id), { attemptId, attempt: Number(attempt.n) });
      } else {
        this.sql.exec("UPDATE attempts SET lease_until = ? WHERE id = ?", lease, attemptId);
      }
      this.schedule(`lease:${attemptId}`, "lease", attemptId, lease);
    });
    await this.syncAlarm();
    const dependencies = this.sql
      .exec<{ depends_on: string }>(
        "SELECT depends_on FROM edges WHERE task_id = ? ORDER BY depends_on",
        task.id,
      )
      .toArray()
      .map((r) => r.depends_on);
    const outputs: Record<string, string> = {};
    for (const dep of dependencies) {
      const done = this.row(
        "SELECT output_key FROM attempts WHERE task_id = ? AND status = 'succeeded' ORDER BY n DESC LIMIT 1",
        dep,
      );
      if (done?.output_key) outputs[dep] = String(done.output_key);
    }
    const input: { [key: string]: JsonValue } = {
      ...(JSON.parse(String(task.inputs)) as { [key: string]: JsonValue }),
      ...(task.feedback ? { feedback: String(task.feedback) } : {}),
      dependencies: outputs,
      task: { id: String(task.id), successCriteria: JSON.parse(String(task.success_criteria)) as string[] },
    };
    return ok({
      projectId: String(project.id),
      ownerId: String(project.owner_id),
      attemptId,
      taskId: String(task.id),
      isPlan: Number(task.is_plan) === 1,
      capsule: String(task.capsule),
      version: String(task.version),
      runtime: String(task.runtime),
      permissions: JSON.parse(String(task.permissions)) as string[],
      input,
      successCriteria: JSON.parse(String(task.success_criteria)) as string[],
      reservedTokens: Number(attempt.reserved_tokens),
      reviewer: project.reviewer
        ? (JSON.parse(String(project.reviewer)) as { capsule: string; version: string })
        : null,
    });
  }

  /**
   * Records how an attempt ended, exactly once: charges its usage against the budget, gates the output and
   * moves the graph on. A second report for the same attempt changes nothing.
   */
  async settleAttempt(attemptId: string, raw: Outcome): Promise<CoordinatorResult<{ duplicate: boolean }>> {
    const parsed = outcomeSchema.safeParse(raw);
    if (!parsed.success)
      return refuse("VALIDATION_FAILED", `Invalid outcome: ${parsed.error.issues[0]?.message}`);
    const outcome = parsed.data;
    const attempt = this.row("SELECT * FROM attempts WHERE id = ?", attemptId);
    if (!attempt) return refuse("NOT_FOUND", `Unknown attempt ${attemptId}`);
    if (!["dispatching", "queued", "running"].includes(String(attempt.status)))
      return ok({ duplicate: true });
    const project = this.project()!;
    const task = this.row("SELECT * FROM tasks WHERE id = ?", attempt.task_id)!;
    const taskId = String(task.id);
    const reserved = Number(attempt.reserved_tokens);
    // What the host metered for this attempt's ctx.llm calls (the capsule's and its reviewer's), as the provider
    // reported them; it adds to what the agent measured, which never includes those calls.
    const metered = this.meteredModelUsage(attemptId, String(task.capsule));
    const usage = {
      inputTokens:
        outcome.usage.inputTokens +
        (outcome.status === "succeeded" ? (outcome.gateUsage?.inputTokens ?? 0) : 0) +
        metered.all.inputTokens,
      outputTokens:
        outcome.usage.outputTokens +
        (outcome.status === "succeeded" ? (outcome.gateUsage?.outputTokens ?? 0) : 0) +
        metered.all.outputTokens,
    };
    const model = outcome.usage.model ?? metered.capsule.model;
    // The tokens the platform's per-model price applies to: a prompt capsule's, and the capsule's own ctx.llm calls.
    const modelTokens =
      (outcome.usage.model ? outcome.usage.inputTokens + outcome.usage.outputTokens : 0) +
      metered.capsule.tokens;
    // Agents cap work at the reservation; the clamp keeps spent <= limit even if one did not.
    const charged = Math.min(usage.inputTokens + usage.outputTokens, reserved);

    let planned: PinnedTask[] | null = null;
    let planError: string | null = null;
    if (outcome.status === "succeeded" && Number(task.is_plan) === 1) {
      try {
        const output = plannerOutputSchema.parse(outcome.output);
        const reviewerTokens = project.reviewer
          ? Number(JSON.parse(String(project.reviewer)).tokenEstimate ?? 0)
          : 0;
        planned = (
          await planTasks(database(this.env.DB), output.tasks, JSON.parse(String(project.accept_permissions)))
        ).map((t) => ({ ...t, tokenEstimate: t.tokenEstimate + reviewerTokens }));
        // The planner may add paid capsules: their prices need the same acceptance as a graph's at creation.
        await requireAcceptedPrices(
          database(this.env.DB),
          String(project.owner_id),
          planned.map((t) => ({
            task: t.id,
            capsule: t.capsule,
            price: t.price ?? { model: "free", amountMicroUsd: 0 },
          })),
          acceptedPriceSchema.array().parse(JSON.parse(String(project.accept_prices ?? "[]"))),
        );
      } catch (error) {
        planError =
          error instanceof AppError
            ? error.message
            : `The planner output is invalid: ${(error as Error).message}`;
      }
    }

    // Each settlement writes its own object, so a concurrent duplicate never overwrites the output that counts.
    const outputKey = `projects/${project.id}/outputs/${taskId}/${attemptId}-${crypto.randomUUID().slice(0, 8)}.json`;
    if (outcome.status === "succeeded") {
      await this.env.BUNDLES.put(outputKey, JSON.stringify(outcome.output ?? null), {
        httpMetadata: { contentType: "application/json" },
      });
    }

    // The check and the commit run with no await between them: of concurrent settlements of one attempt, the
    // first to get here commits; the others find it settled and change nothing.
    let duplicate = false;
    this.ctx.storage.transactionSync(() => {
      const current = this.row("SELECT status FROM attempts WHERE id = ?", attemptId);
      if (!["dispatching", "queued", "running"].includes(String(current?.status))) {
        duplicate = true;
        return;
      }
      // Read again: the task may have moved (a cancel, a review) while the output was stored.
      const live = this.row("SELECT * FROM tasks WHERE id = ?", taskId)!;
      const now = nowIso();
      this.sql.exec(
        `UPDATE attempts SET status = ?, input_tokens = ?, output_tokens = ?, error = ?, output_key = ?, finished_at = ?,
           lease_until = NULL WHERE id = ?`,
        outcome.status,
        usage.inputTokens,
        usage.outputTokens,
        outcome.status === "failed" ? `${outcome.error.code}: ${outcome.error.message}` : planError,
        outcome.status === "succeeded" ? outputKey : null,
        now,
        attemptId,
      );
      this.sql.exec(
        "INSERT OR IGNORE INTO budget_entries (attempt_id, kind, tokens, created_at) VALUES (?, 'settle', ?, ?)",
        attemptId,
        charged,
        now,
      );
      this.sql.exec("DELETE FROM schedule WHERE id = ?", `lease:${attemptId}`);
      this.schedule(`acct:${attemptId}`, "account", attemptId, Date.now());
      this.checkSoftLimit();
      this.sql.exec(
        "UPDATE attempts SET capsule_tokens = ?, model = ?, model_tokens = ? WHERE id = ?",
        outcome.usage.inputTokens + outcome.usage.outputTokens + metered.capsule.tokens,
        model,
        modelTokens,
        attemptId,
      );
      // Counting the execution and charging for it (planners' model tokens too) happen after the transaction,
      // from this durable job.
      this.schedule(`exec:${attemptId}`, "execution", attemptId, Date.now());
      this.emit("usage.tokens", taskId, {
        attemptId,
        capsule: String(task.capsule),
        inputTokens: usage.inputTokens,
        outputTokens: usage.outputTokens,
        chargedTokens: charged,
        outcome: outcome.status === "succeeded" ? "success" : "failure",
        ...(model ? { model } : {}),
        ...(metered.all.inputTokens + metered.all.outputTokens > 0
          ? { modelInputTokens: metered.all.inputTokens, modelOutputTokens: metered.all.outputTokens }
          : {}),
        runtime: String(task.runtime),
        durationMs: Math.max(0, Date.now() - Date.parse(String(attempt.started_at ?? attempt.dispatched_at))),
        ...(outcome.status === "failed" ? { errorCode: outcome.error.code } : {}),
      });
      if (String(live.status) === "cancelled") return;

      if (outcome.status === "failed") {
        this.recordFailure(live, outcome.error.message, outcome.error.code, outcome.error.retryable);
        return;
      }
      if (Number(task.is_plan) === 1) {
        if (planError || !planned) {
          this.setTaskStatus(taskId, "failed", { last_error: planError });
          this.finish("failed", `Planning failed: ${planError}`);
          return;
        }
        this.setTaskStatus(taskId, "completed", { score: null });
        this.insertTasks(planned, false);
        this.emit("project.planned", null, { tasks: planned.length });
        return;
      }
      this.applyGate(this.project()!, live, attemptId, outcome.gate ?? null);
    });
    if (duplicate) {
      if (outcome.status === "succeeded") await this.env.BUNDLES.delete(outputKey);
      return ok({ duplicate: true });
    }
    await this.advance();
    return ok({ duplicate: false });
  }

  /**
   * How many tokens a running attempt's ctx.llm calls may still use: its reservation minus what its model calls
   * used so far. Refused once the attempt is no longer running, so a capsule cannot spend after its attempt ended.
   */
  async modelAllowance(attemptId: string): Promise<CoordinatorResult<{ remainingTokens: number }>> {
    const attempt = this.row("SELECT status, reserved_tokens FROM attempts WHERE id = ?", attemptId);
    if (!attempt) return refuse("NOT_FOUND", `Unknown attempt ${attemptId}`);
    if (attempt.status !== "running") {
      return refuse("INVALID_STATE", `Attempt ${attemptId} is ${attempt.status}; it may not call a model`);
    }
    const used = this.count(
      "SELECT coalesce(sum(input_tokens + output_tokens), 0) AS n FROM model_calls WHERE attempt_id = ?",
      attemptId,
    );
    return ok({ remainingTokens: Math.max(0, Number(attempt.reserved_tokens) - used) });
  }

  /** Records one ctx.llm call as the provider reported it, once per call id; settlement adds it to the attempt. */
  async recordModelCall(
    attemptId: string,
    raw: ModelCall,
  ): Promise<CoordinatorResult<{ recorded: boolean }>> {
    const parsed = modelCallSchema.safeParse(raw);
    if (!parsed.success) {
      return refuse("VALIDATION_FAILED", `Invalid model call: ${parsed.error.issues[0]?.message}`);
    }
    if (!this.row("SELECT 1 AS x FROM attempts WHERE id = ?", attemptId)) {
      return refuse("NOT_FOUND", `Unknown attempt ${attemptId}`);
    }
    const call = parsed.data;
    // Recorded even after the attempt ended: the provider billed the tokens, and the report shows them.
    const written = this.sql.exec(
      `INSERT OR IGNORE INTO model_calls (id, attempt_id, capsule, provider, model, input_tokens, output_tokens, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      call.id,
      attemptId,
      call.capsule,
      call.provider,
      call.model,
      call.inputTokens,
      call.outputTokens,
      nowIso(),
    ).rowsWritten;
    return ok({ recorded: written > 0 });
  }

  /** A human's decision on a task held at a quality gate (or failed for good). */
  async reviewTask(
    taskId: string,
    decision: "approve" | "reject" | "request_changes",
    feedback: string,
    reviewer: string,
    traceparent?: string,
  ): Promise<CoordinatorResult<ProjectSnapshot>> {
    const project = this.project();
    const task = this.row("SELECT * FROM tasks WHERE id = ?", taskId);
    if (!project || !task) return refuse("NOT_FOUND", `No task ${taskId}`);
    const status = String(task.status) as TaskStatus;
    const reopening = status === "failed" && project.status === "failed";
    if (status !== "awaiting_review" && !reopening) {
      return refuse(
        "INVALID_STATE",
        `Task ${taskId} is ${status}; only tasks awaiting review can be decided`,
      );
    }
    if (reopening && decision === "approve") {
      return refuse("INVALID_STATE", `Task ${taskId} failed; ask for changes to run it again, or reject it`);
    }
    if (decision === "request_changes" && Number(task.remediations) >= MAX_HUMAN_REMEDIATIONS + 2) {
      return refuse("INVALID_STATE", `Task ${taskId} has been re-run too many times`);
    }
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        "INSERT INTO reviews (task_id, attempt_id, kind, score, subscores, decision, feedback, reviewer, created_at) VALUES (?, NULL, 'human', NULL, NULL, ?, ?, ?, ?)",
        taskId,
        decision,
        feedback,
        reviewer,
        nowIso(),
      );
      this.emit("review.decided", taskId, { decision, reviewer, feedback });
      if (decision === "approve") {
        this.setTaskStatus(taskId, "completed");
      } else if (decision === "reject") {
        this.setTaskStatus(taskId, "failed", { last_error: `Rejected by ${reviewer}: ${feedback}` });
        if (!reopening) this.emit("task.failed", taskId, { reason: "rejected by reviewer" });
      } else {
        if (reopening) {
          this.sql.exec(
            "UPDATE project SET status = 'running', failure_reason = NULL, finished_at = NULL, updated_at = ?",
            nowIso(),
          );
          this.emit("project.status", null, { status: "running", reason: "reopened by reviewer" });
          for (const skipped of this.sql
            .exec<Row>("SELECT id FROM tasks WHERE status = 'skipped' ORDER BY seq")
            .toArray()) {
            this.setTaskStatus(String(skipped.id), "pending");
          }
        }
        this.sql.exec(
          "UPDATE tasks SET status = 'ready', feedback = ?, remediations = remediations + 1, failures = 0, updated_at = ? WHERE id = ?",
          feedback,
          nowIso(),
          taskId,
        );
        this.emit("task.status", taskId, { status: "ready" });
        this.emit("task.remediation", taskId, { by: reviewer, feedback });
      }
    });
    this.requestLog(traceparent).info("task reviewed", { taskId, decision, reviewer, reopening });
    await this.advance();
    return ok(this.snapshotNow());
  }

  /**
   * Changes the project's token limit, its soft-alert share and its hard share: work stops at `hardPct` of the
   * limit (the budget's `limitTokens` is that cap). A cap below what is spent stops new work.
   */
  async setBudget(
    limitTokens: number,
    softPct: number,
    hardPct = 100,
    traceparent?: string,
  ): Promise<CoordinatorResult<ProjectSnapshot>> {
    const project = this.project();
    if (!project) return refuse("NOT_FOUND", "No such project");
    if (TERMINAL_PROJECT.includes(project.status as ProjectStatus)) {
      return refuse("INVALID_STATE", `The project is ${project.status}; its budget can no longer change`);
    }
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        "UPDATE project SET limit_tokens = ?, soft_pct = ?, hard_pct = ?, soft_alerted = 0, updated_at = ?",
        limitTokens,
        softPct,
        hardPct,
        nowIso(),
      );
      this.emit("budget.changed", null, { limitTokens, softPct, hardPct });
      this.checkSoftLimit();
    });
    this.requestLog(traceparent).info("budget changed", { limitTokens, softPct, hardPct });
    await this.advance();
    return ok(this.snapshotNow());
  }

  async cancel(by: string, traceparent?: string): Promise<CoordinatorResult<ProjectSnapshot>> {
    const project = this.project();
    if (!project) return refuse("NOT_FOUND", "No such project");
    if (TERMINAL_PROJECT.includes(project.status as ProjectStatus)) {
      return refuse("INVALID_STATE", `The project is already ${project.status}`);
    }
    this.ctx.storage.transactionSync(() => {
      for (const active of this.sql
        .exec<Row>(`SELECT id FROM attempts WHERE status IN ${ACTIVE_ATTEMPT}`)
        .toArray()) {
        this.schedule(`acct:${active.id}`, "account", String(active.id), Date.now());
      }
      this.sql.exec(
        `UPDATE attempts SET status = 'cancelled', finished_at = ?, lease_until = NULL WHERE status IN ${ACTIVE_ATTEMPT}`,
        nowIso(),
      );
      for (const open of this.sql
        .exec<Row>(
          "SELECT id FROM tasks WHERE status NOT IN ('completed','failed','skipped','cancelled') ORDER BY seq",
        )
        .toArray()) {
        this.setTaskStatus(String(open.id), "cancelled");
      }
      this.sql.exec("DELETE FROM schedule WHERE kind IN ('retry','lease','dispatch')");
      this.finish("cancelled", `Cancelled by ${by}`);
    });
    this.requestLog(traceparent).info("project cancelled", { by });
    await this.advance();
    return ok(this.snapshotNow());
  }

  /** The project's report: artefacts, per-task spend, attempts and gate scores, decisions, timeline, totals. */
  async report(): Promise<CoordinatorResult<ProjectReport>> {
    const project = this.project();
    if (!project) return refuse("NOT_FOUND", "No such project");
    const snapshot = this.snapshotNow();
    const reviews = this.sql.exec<Row>("SELECT * FROM reviews ORDER BY id").toArray();
    const attempts = this.sql.exec<Row>("SELECT * FROM attempts ORDER BY task_id, n").toArray();
    const artifacts: { path: string; size: number }[] = [];
    const prefix = `projects/${project.id}/artifacts/`;
    let cursor: string | undefined;
    do {
      const page = await this.env.BUNDLES.list({ prefix, cursor });
      artifacts.push(...page.objects.map((o) => ({ path: o.key.slice(prefix.length), size: o.size })));
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor);
    const logs: { taskId: string; attemptId: string; size: number }[] = [];
    const logPrefix = `projects/${project.id}/logs/`;
    for (const object of (await this.env.BUNDLES.list({ prefix: logPrefix })).objects) {
      const [taskId = "", file = ""] = object.key.slice(logPrefix.length).split("/");
      logs.push({ taskId, attemptId: file.replace(/\.log$/, ""), size: object.size });
    }
    const timeline = this.sql
      .exec<Row>("SELECT seq, type, task_id, data, created_at FROM events ORDER BY seq")
      .toArray()
      .map((e) => ({
        seq: Number(e.seq),
        type: String(e.type),
        taskId: e.task_id,
        at: String(e.created_at),
        data: JSON.parse(String(e.data)),
      }));
    return ok({
      project: {
        id: snapshot.id,
        name: snapshot.name,
        owner: snapshot.owner,
        status: snapshot.status,
        failureReason: snapshot.failureReason,
        createdAt: snapshot.createdAt,
        finishedAt: snapshot.finishedAt,
      },
      budget: snapshot.budget,
      totals: {
        tasks: snapshot.tasks.length,
        completed: snapshot.tasks.filter((t) => t.status === "completed").length,
        failed: snapshot.tasks.filter((t) => t.status === "failed").length,
        attempts: attempts.length,
        inputTokens: snapshot.tasks.reduce((n, t) => n + t.usage.inputTokens, 0),
        outputTokens: snapshot.tasks.reduce((n, t) => n + t.usage.outputTokens, 0),
        spentTokens: snapshot.budget.spentTokens,
        durationSeconds: snapshot.finishedAt
          ? (Date.parse(snapshot.finishedAt) - Date.parse(snapshot.createdAt)) / 1000
          : null,
      },
      tasks: snapshot.tasks.map((t) => ({
        ...t,
        attemptsDetail: attempts
          .filter((a) => a.task_id === t.id)
          .map((a) => ({
            id: String(a.id),
            n: Number(a.n),
            reason: String(a.reason),
            status: String(a.status),
            reservedTokens: Number(a.reserved_tokens),
            inputTokens: Number(a.input_tokens),
            outputTokens: Number(a.output_tokens),
            error: a.error,
            startedAt: a.started_at,
            finishedAt: a.finished_at,
          })),
        gates: reviews
          .filter((r) => r.task_id === t.id && r.kind === "gate")
          .map((r) => ({
            attemptId: r.attempt_id,
            score: r.score,
            subscores: r.subscores ? JSON.parse(String(r.subscores)) : null,
            decision: r.decision,
            feedback: r.feedback,
          })),
      })),
      reviewerDecisions: reviews
        .filter((r) => r.kind === "human")
        .map((r) => ({
          taskId: r.task_id,
          decision: r.decision,
          feedback: r.feedback,
          reviewer: r.reviewer,
          at: r.created_at,
        })),
      artifacts,
      logs,
      timeline,
    });
  }

  /** Events after a sequence number, for reconnecting live views. */
  async eventsSince(
    seq: number,
    limit = 500,
  ): Promise<{ seq: number; type: string; taskId: string | null; data: unknown; at: string }[]> {
    return this.sql
      .exec<Row>(
        "SELECT seq, type, task_id, data, created_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        seq,
        limit,
      )
      .toArray()
      .map((e) => ({
        seq: Number(e.seq),
        type: String(e.type),
        taskId: e.task_id === null ? null : String(e.task_id),
        data: JSON.parse(String(e.data)),
        at: String(e.created_at),
      }));
  }

  // ---- live views ---------------------------------------------------------------------------------------

  /** WebSocket (hibernation API) and Server-Sent Events streams of every state change. */
  override async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const after = Number(request.headers.get("last-event-id") ?? url.searchParams.get("after") ?? "0") || 0;
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const pair = new WebSocketPair();
      this.ctx.acceptWebSocket(pair[1]);
      pair[1].send(JSON.stringify({ type: "snapshot", project: this.project() ? this.snapshotNow() : null }));
      for (const event of await this.eventsSince(after)) {
        pair[1].send(
          JSON.stringify({
            type: "event",
            seq: event.seq,
            taskId: event.taskId,
            at: event.at,
            eventType: event.type,
            data: event.data,
          }),
        );
      }
      return new Response(null, { status: 101, webSocket: pair[0] });
    }
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const writer = writable.getWriter();
    const encoder = new TextEncoder();
    void (async () => {
      await writer.write(encoder.encode(`event: snapshot\ndata: ${JSON.stringify(this.snapshotNow())}\n\n`));
      for (const event of await this.eventsSince(after)) {
        await writer.write(
          encoder.encode(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`),
        );
      }
      this.streams.add(writer);
    })().catch(() => this.streams.delete(writer));
    return new Response(readable, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
    });
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    if (message === "ping") ws.send("pong");
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    ws.close(code === 1005 ? 1000 : code, "closing");
  }

  // ---- alarm: retries, leases, dispatch retries, event delivery ----------------------------------------

  override async alarm(): Promise<void> {
    const now = Date.now();
    const due = this.sql
      .exec<Row>(
        "SELECT * FROM schedule WHERE kind IN ('retry','lease','dispatch') AND due_at <= ? ORDER BY due_at",
        now,
      )
      .toArray();
    this.ctx.storage.transactionSync(() => {
      for (const job of due) {
        this.sql.exec("DELETE FROM schedule WHERE id = ?", job.id);
        if (job.kind === "retry") {
          const waiting = this.row("SELECT id FROM tasks WHERE id = ? AND status = 'retry_wait'", job.ref);
          if (waiting) this.setTaskStatus(String(waiting.id), "ready");
        } else if (job.kind === "lease") {
          const attempt = this.row("SELECT * FROM attempts WHERE id = ?", job.ref);
          if (
            attempt &&
            ["queued", "running", "dispatching"].includes(String(attempt.status)) &&
            Number(attempt.lease_until ?? 0) <= now
          ) {
            this.sql.exec(
              "UPDATE attempts SET status = 'lost', finished_at = ?, lease_until = NULL WHERE id = ?",
              nowIso(),
              job.ref,
            );
            this.schedule(`acct:${job.ref}`, "account", String(job.ref), Date.now());
            const task = this.row("SELECT * FROM tasks WHERE id = ?", attempt.task_id)!;
            this.emit("task.lease_expired", String(task.id), { attemptId: String(job.ref) });
            this.recordFailure(
              task,
              "the agent stopped reporting before its lease ran out",
              "LEASE_EXPIRED",
              true,
            );
          }
        }
      }
    });
    await this.advance();
  }

  // ---- the engine ---------------------------------------------------------------------------------------

  private insertTasks(tasks: PinnedTask[], planning: boolean): void {
    const now = nowIso();
    const base = Number(this.row("SELECT coalesce(max(seq), 0) AS s FROM tasks")?.s ?? 0);
    tasks.forEach((task, index) => {
      const status: TaskStatus = task.dependsOn.length === 0 ? "ready" : "pending";
      const inserted = this.sql.exec(
        `INSERT OR IGNORE INTO tasks (id, seq, capsule, version, runtime, permissions, inputs, token_estimate, success_criteria,
           is_plan, status, created_at, updated_at, price_estimate_micro_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        task.id,
        base + index + 1,
        task.capsule,
        task.version,
        task.runtime,
        JSON.stringify(task.permissions),
        JSON.stringify(task.inputs),
        task.tokenEstimate,
        JSON.stringify(task.successCriteria),
        planning ? 1 : 0,
        status,
        now,
        now,
        task.priceEstimateMicroUsd ?? 0,
      ).rowsWritten;
      // A task's first status is a state change like any other: the event log replays every task from here.
      if (inserted > 0) this.emit("task.status", task.id, { status });
      for (const dep of task.dependsOn) {
        this.sql.exec("INSERT OR IGNORE INTO edges (task_id, depends_on) VALUES (?, ?)", task.id, dep);
      }
    });
  }

  private applyGate(project: Row, task: Row, attemptId: string, gate: GateResult | null): void {
    const taskId = String(task.id);
    if (!gate) {
      this.setTaskStatus(taskId, "completed", { score: null });
      this.emit("task.completed", taskId, { attemptId, score: null });
      return;
    }
    const score = gateScore(gate.scores);
    const threshold = Number(project.quality_threshold);
    const passed = score >= threshold;
    const autoLeft = Number(project.auto_remediations) - Number(task.remediations);
    const decision = passed ? "approve" : autoLeft > 0 ? "request_changes" : "needs_human";
    this.sql.exec(
      "INSERT INTO reviews (task_id, attempt_id, kind, score, subscores, decision, feedback, reviewer, created_at) VALUES (?, ?, 'gate', ?, ?, ?, ?, ?, ?)",
      taskId,
      attemptId,
      score,
      JSON.stringify(gate.scores),
      decision,
      gate.feedback,
      project.reviewer ? JSON.parse(String(project.reviewer)).capsule : "gate",
      nowIso(),
    );
    this.emit("gate.scored", taskId, { attemptId, score, subscores: gate.scores, threshold, decision });
    if (passed) {
      this.setTaskStatus(taskId, "completed", { score });
      this.emit("task.completed", taskId, { attemptId, score });
    } else if (autoLeft > 0) {
      this.sql.exec(
        "UPDATE tasks SET status = 'ready', score = ?, feedback = ?, remediations = remediations + 1, updated_at = ? WHERE id = ?",
        score,
        gate.feedback,
        nowIso(),
        taskId,
      );
      this.emit("task.status", taskId, { status: "ready" });
      this.emit("task.remediation", taskId, { by: "gate", score, feedback: gate.feedback });
    } else {
      this.setTaskStatus(taskId, "awaiting_review", { score });
      this.emit("task.review_requested", taskId, { score, threshold, feedback: gate.feedback });
    }
  }

  private recordFailure(task: Row, message: string, code: string, retryable: boolean): void {
    const taskId = String(task.id);
    const failures = Number(task.failures) + 1;
    if (retryable && failures < MAX_FAILURES) {
      const delay = this.retryBaseMs() * 2 ** (failures - 1);
      this.sql.exec(
        "UPDATE tasks SET status = 'retry_wait', failures = ?, last_error = ?, updated_at = ? WHERE id = ?",
        failures,
        `${code}: ${message}`,
        nowIso(),
        taskId,
      );
      this.schedule(`retry:${taskId}`, "retry", taskId, Date.now() + delay);
      this.emit("task.status", taskId, { status: "retry_wait" });
      this.emit("task.retry_scheduled", taskId, { failures, delayMs: delay, error: `${code}: ${message}` });
      return;
    }
    this.sql.exec(
      "UPDATE tasks SET status = 'failed', failures = ?, last_error = ?, updated_at = ? WHERE id = ?",
      failures,
      `${code}: ${message}`,
      nowIso(),
      taskId,
    );
    this.emit("task.status", taskId, { status: "failed" });
    this.emit("task.failed", taskId, { failures, error: `${code}: ${message}`, retryable });
  }

  /**
   * Moves the graph forward: unblocks tasks whose dependencies completed, skips those behind a failure, reserves
   * budget and dispatches within the parallelism cap, then settles the project status. Safe to call any time.
   */
  private async advance(): Promise<void> {
    const messages: { body: AgentTaskMessage }[] = [];
    let statusChanged = false;
    // Phase 1: unblock and skip tasks, pick what could start now (no writes to attempts yet).
    const candidates = this.ctx.storage.transactionSync(() => {
      const project = this.project();
      if (!project || TERMINAL_PROJECT.includes(project.status as ProjectStatus)) return [];
      this.cascade();
      const hasFailure = this.count("SELECT count(*) AS n FROM tasks WHERE status = 'failed'") > 0;
      return hasFailure ? [] : this.pickCandidates(project);
    });
    // Phase 2: the account's budget holds across all its projects, so it reserves in its own object.
    const approved: Candidate[] = [];
    let accountRefusal: string | null = null;
    for (const candidate of candidates) {
      const result = await this.accountBudget().reserve(
        candidate.attemptId,
        this.projectId(),
        candidate.tokens,
        candidate.microUsd,
        this.traceparent(),
      );
      if (result.ok) approved.push(candidate);
      else {
        accountRefusal = result.reason;
        break;
      }
    }
    // Phase 3: state may have moved during the awaits; start only what still fits, release the rest.
    const released: string[] = [];
    this.ctx.storage.transactionSync(() => {
      const project = this.project();
      if (!project || TERMINAL_PROJECT.includes(project.status as ProjectStatus)) {
        released.push(...approved.map((c) => c.attemptId));
        return;
      }
      for (const candidate of approved) {
        if (!this.startCandidate(project, candidate, messages)) released.push(candidate.attemptId);
      }
      statusChanged = this.settleProjectStatus(project, accountRefusal);
    });
    for (const attemptId of released) await this.accountBudget().release(attemptId);
    if (messages.length > 0) {
      try {
        await this.env.AGENT_TASKS.sendBatch(messages.map((m) => ({ body: m.body, contentType: "json" })));
        this.ctx.storage.transactionSync(() => {
          for (const m of messages) {
            this.sql.exec(
              "UPDATE attempts SET status = 'queued' WHERE id = ? AND status = 'dispatching'",
              m.body.attemptId,
            );
          }
        });
      } catch (error) {
        this.log().error("agent-tasks send failed", { attempts: messages.length, error });
        this.ctx.storage.transactionSync(() =>
          this.withdrawUnsent(
            messages.map((m) => m.body.attemptId),
            error instanceof Error ? error.message : String(error),
          ),
        );
      }
    }
    await Promise.all([
      this.flushEvents(),
      this.syncExecutions().then(() => this.syncAccountBudget()),
      statusChanged ? this.syncIndex() : Promise.resolve(),
    ]);
    await this.syncAlarm();
  }

  /**
   * Takes back attempts whose agent-tasks message could not be sent: no agent ever saw them, so they are not
   * failures. Each attempt row goes (with its reservation, released in the account budget by the usual job), its
   * task is ready again, and a dispatch job brings the alarm back shortly to send it anew.
   */
  private withdrawUnsent(attemptIds: string[], error: string): void {
    let withdrawn = 0;
    for (const attemptId of attemptIds) {
      const attempt = this.row(
        "SELECT task_id FROM attempts WHERE id = ? AND status = 'dispatching'",
        attemptId,
      );
      if (!attempt) continue;
      this.sql.exec("DELETE FROM attempts WHERE id = ?", attemptId);
      this.sql.exec("DELETE FROM budget_entries WHERE attempt_id = ?", attemptId);
      this.sql.exec("DELETE FROM schedule WHERE id = ?", `lease:${attemptId}`);
      this.schedule(`acct:${attemptId}`, "account", attemptId, Date.now());
      const taskId = String(attempt.task_id);
      this.emit("task.dispatch_failed", taskId, { attemptId, error: error.slice(0, 500) });
      if (this.row("SELECT 1 AS x FROM tasks WHERE id = ? AND status = 'queued'", taskId)) {
        this.setTaskStatus(taskId, "ready");
      }
      withdrawn += 1;
    }
    if (withdrawn > 0)
      this.schedule("dispatch", "dispatch", this.projectId(), Date.now() + this.retryBaseMs());
  }

  private cascade(): void {
    for (;;) {
      const blocked = this.sql
        .exec<Row>(
          `SELECT DISTINCT e.task_id AS id FROM edges e JOIN tasks d ON d.id = e.depends_on JOIN tasks t ON t.id = e.task_id
           WHERE d.status IN ('failed','skipped','cancelled') AND t.status IN ('pending','ready')`,
        )
        .toArray();
      if (blocked.length === 0) break;
      for (const row of blocked) {
        this.setTaskStatus(String(row.id), "skipped");
        this.emit("task.skipped", String(row.id), { reason: "a dependency did not complete" });
      }
    }
    const unblocked = this.sql
      .exec<Row>(
        `SELECT t.id FROM tasks t WHERE t.status = 'pending' AND NOT EXISTS (
           SELECT 1 FROM edges e JOIN tasks d ON d.id = e.depends_on WHERE e.task_id = t.id AND d.status <> 'completed')`,
      )
      .toArray();
    for (const row of unblocked) this.setTaskStatus(String(row.id), "ready");
  }

  /** Ready tasks that fit the parallelism cap and the project budget, in graph order (reads only). */
  private pickCandidates(project: Row): Candidate[] {
    const max = Number(project.max_parallel);
    let active = this.count(`SELECT count(*) AS n FROM attempts WHERE status IN ${ACTIVE_ATTEMPT}`);
    const budget = this.budget();
    let available = budget.limitTokens - budget.spentTokens - budget.reservedTokens;
    let spendLeft = this.spendLeft(project);
    const picked: Candidate[] = [];
    for (const task of this.sql.exec<Row>(
      "SELECT id, token_estimate, price_estimate_micro_usd FROM tasks WHERE status = 'ready' ORDER BY seq",
    )) {
      if (active >= max) break;
      const need = Number(task.token_estimate);
      const cost = Number(task.price_estimate_micro_usd);
      if (need > available || cost > spendLeft) continue;
      picked.push({ taskId: String(task.id), attemptId: newId("att"), tokens: need, microUsd: cost });
      available -= need;
      spendLeft -= cost;
      active += 1;
    }
    return picked;
  }

  /** What the project may still spend (cap minus spent minus reserved), or infinity without a cap. */
  private spendLeft(project: Row): number {
    if (project.max_spend_micro_usd === null || project.max_spend_micro_usd === undefined) {
      return Number.POSITIVE_INFINITY;
    }
    // A finished attempt holds its reservation until its real spend is recorded (the execution job).
    const committed = this.count(
      `SELECT coalesce(sum(CASE
         WHEN a.status IN ${ACTIVE_ATTEMPT} THEN a.reserved_micro_usd
         WHEN s.id IS NOT NULL THEN max(a.reserved_micro_usd, a.spend_micro_usd)
         ELSE a.spend_micro_usd END), 0) AS n
       FROM attempts a LEFT JOIN schedule s ON s.id = 'exec:' || a.id`,
    );
    return Number(project.max_spend_micro_usd) - committed;
  }

  /** Creates the attempt for a candidate if its task is still ready and still fits; false otherwise. */
  private startCandidate(
    project: Row,
    candidate: Candidate,
    messages: { body: AgentTaskMessage }[],
  ): boolean {
    const task = this.row("SELECT * FROM tasks WHERE id = ?", candidate.taskId);
    if (task?.status !== "ready") return false;
    const active = this.count(`SELECT count(*) AS n FROM attempts WHERE status IN ${ACTIVE_ATTEMPT}`);
    const budget = this.budget();
    if (active >= Number(project.max_parallel)) return false;
    if (candidate.tokens > budget.limitTokens - budget.spentTokens - budget.reservedTokens) return false;
    if (candidate.microUsd > this.spendLeft(project)) return false;
    const { attemptId, tokens: need } = candidate;
    const n = this.count("SELECT count(*) AS n FROM attempts WHERE task_id = ?", task.id) + 1;
    const reason = n === 1 ? "run" : Number(task.failures) > 0 ? "retry" : "remediation";
    const now = nowIso();
    this.sql.exec(
      `INSERT INTO attempts (id, task_id, n, reason, status, reserved_tokens, dispatched_at, lease_until, reserved_micro_usd)
       VALUES (?, ?, ?, ?, 'dispatching', ?, ?, ?, ?)`,
      attemptId,
      task.id,
      n,
      reason,
      need,
      now,
      Date.now() + this.leaseMs(),
      candidate.microUsd,
    );
    this.sql.exec(
      "INSERT OR IGNORE INTO budget_entries (attempt_id, kind, tokens, created_at) VALUES (?, 'reserve', ?, ?)",
      attemptId,
      need,
      now,
    );
    this.schedule(`lease:${attemptId}`, "lease", attemptId, Date.now() + this.leaseMs());
    this.setTaskStatus(String(task.id), "queued");
    this.emit("task.dispatched", String(task.id), { attemptId, attempt: n, reason, reservedTokens: need });
    const traceparent = this.traceparent();
    messages.push({
      body: { projectId: String(project.id), attemptId, ...(traceparent ? { traceparent } : {}) },
    });
    return true;
  }

  /** Derives the project status from its tasks; returns true when it changed. */
  private settleProjectStatus(project: Row, accountRefusal: string | null = null): boolean {
    const counts = new Map<string, number>(
      this.sql
        .exec<{ status: string; n: number }>("SELECT status, count(*) AS n FROM tasks GROUP BY status")
        .toArray()
        .map((r) => [r.status, r.n]),
    );
    const n = (...statuses: TaskStatus[]) => statuses.reduce((sum, s) => sum + (counts.get(s) ?? 0), 0);
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const inFlight =
      n("queued", "running", "retry_wait") +
      this.count(`SELECT count(*) AS n FROM attempts WHERE status IN ${ACTIVE_ATTEMPT}`);
    let next: ProjectStatus = String(project.status) as ProjectStatus;
    let reason: string | null = null;
    const planPending =
      this.count("SELECT count(*) AS n FROM tasks WHERE is_plan = 1 AND status <> 'completed'") > 0;
    if (n("failed") > 0) {
      if (inFlight === 0) {
        const failed = this.row(
          "SELECT id, last_error FROM tasks WHERE status = 'failed' ORDER BY seq LIMIT 1",
        )!;
        next = "failed";
        reason = `Task ${failed.id} failed: ${failed.last_error}`;
      }
    } else if (total > 0 && n("completed") === total) {
      next = "completed";
    } else if (inFlight === 0 && n("ready") > 0) {
      next = "budget_exhausted";
      reason = accountRefusal ?? "No ready task fits in the remaining budget (tokens or spend)";
    } else if (inFlight === 0 && n("awaiting_review") > 0) {
      next = "awaiting_review";
    } else {
      next = planPending ? "planning" : "running";
    }
    if (next === project.status) return false;
    if (TERMINAL_PROJECT.includes(next)) this.finish(next, reason);
    else {
      this.sql.exec("UPDATE project SET status = ?, updated_at = ? WHERE id = ?", next, nowIso(), project.id);
      this.emit("project.status", null, { status: next });
    }
    return true;
  }

  private finish(status: ProjectStatus, reason: string | null): void {
    const now = nowIso();
    this.sql.exec(
      "UPDATE project SET status = ?, failure_reason = ?, finished_at = ?, updated_at = ?",
      status,
      reason,
      now,
      now,
    );
    this.emit(`project.${status}`, null, { status, reason, budget: this.budget() });
  }

  // ---- rows, events and the index in D1 -----------------------------------------------------------------

  /** Emits one budget alert when spending crosses the project's soft share of its limit. */
  private checkSoftLimit(): void {
    const project = this.project();
    if (!project || Number(project.soft_alerted) === 1) return;
    const budget = this.budget();
    // The soft share is of the configured limit, not of the hard cap.
    const limit = Number(project.limit_tokens);
    const threshold = (limit * Number(project.soft_pct)) / 100;
    if (budget.spentTokens < threshold) return;
    this.sql.exec("UPDATE project SET soft_alerted = 1");
    this.emit("budget.threshold", null, {
      scope: "project",
      level: "soft",
      softPct: Number(project.soft_pct),
      spentTokens: budget.spentTokens,
      limitTokens: limit,
    });
  }

  private project(): Row | null {
    return this.row("SELECT * FROM project LIMIT 1");
  }

  private row(query: string, ...bindings: unknown[]): Row | null {
    return this.sql.exec<Row>(query, ...bindings).toArray()[0] ?? null;
  }

  private count(query: string, ...bindings: unknown[]): number {
    return Number(this.row(query, ...bindings)?.n ?? 0);
  }

  /** Tokens of an attempt's recorded ctx.llm calls: all of them, and the task capsule's own with its model. */
  private meteredModelUsage(
    attemptId: string,
    capsule: string,
  ): {
    all: { inputTokens: number; outputTokens: number };
    capsule: { tokens: number; model: string | undefined };
  } {
    const rows = this.sql
      .exec<Row>(
        `SELECT capsule, model, sum(input_tokens) AS i, sum(output_tokens) AS o FROM model_calls WHERE attempt_id = ?
         GROUP BY capsule, model ORDER BY sum(input_tokens + output_tokens) DESC, model`,
        attemptId,
      )
      .toArray();
    const own = rows.filter((r) => r.capsule === capsule);
    return {
      all: {
        inputTokens: rows.reduce((n, r) => n + Number(r.i), 0),
        outputTokens: rows.reduce((n, r) => n + Number(r.o), 0),
      },
      // One model is billed per attempt: the one the capsule spent most tokens on.
      capsule: {
        tokens: own.reduce((n, r) => n + Number(r.i) + Number(r.o), 0),
        model: own[0] ? String(own[0].model) : undefined,
      },
    };
  }

  private budget(): ProjectSnapshot["budget"] {
    const project = this.project();
    const spent = this.count(
      "SELECT coalesce(sum(tokens), 0) AS n FROM budget_entries WHERE kind = 'settle'",
    );
    const reserved = this.count(
      `SELECT coalesce(sum(reserved_tokens), 0) AS n FROM attempts WHERE status IN ${ACTIVE_ATTEMPT}`,
    );
    // What reservations may reach: the limit times its hard share (100% unless a budget PUT set another).
    const cap = Math.floor((Number(project?.limit_tokens ?? 0) * Number(project?.hard_pct ?? 100)) / 100);
    return { limitTokens: cap, reservedTokens: reserved, spentTokens: spent };
  }

  private setTaskStatus(
    taskId: string,
    status: TaskStatus,
    extra: Record<string, SqlStorageValue> = {},
  ): void {
    const sets = Object.keys(extra)
      .map((k) => `, ${k} = ?`)
      .join("");
    this.sql.exec(
      `UPDATE tasks SET status = ?, updated_at = ?${sets} WHERE id = ?`,
      status,
      nowIso(),
      ...Object.values(extra),
      taskId,
    );
    this.emit("task.status", taskId, { status });
  }

  private schedule(id: string, kind: string, ref: string, dueAt: number): void {
    this.sql.exec(
      "INSERT INTO schedule (id, kind, ref, due_at) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET due_at = excluded.due_at",
      id,
      kind,
      ref,
      dueAt,
    );
  }

  private async syncAlarm(): Promise<void> {
    const next = this.row("SELECT min(due_at) AS due FROM schedule");
    const unsent = this.count("SELECT count(*) AS n FROM events WHERE sent = 0");
    const unconfirmed = this.row(
      `SELECT min(sent_at + ? * (1 << min(resends, ${MAX_RESEND_DOUBLINGS}))) AS at FROM events WHERE sent = 1`,
      this.eventResendMs(),
    );
    let due = next?.due === null || next?.due === undefined ? null : Number(next.due);
    if (unconfirmed?.at !== null && unconfirmed?.at !== undefined) {
      due = Math.min(due ?? Number.POSITIVE_INFINITY, Number(unconfirmed.at));
    }
    const wanted = unsent > 0 ? Math.min(due ?? Number.POSITIVE_INFINITY, Date.now() + 5_000) : due;
    if (wanted === null || !Number.isFinite(wanted)) return;
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > wanted || current < Date.now()) await this.ctx.storage.setAlarm(wanted);
  }

  private emit(type: string, taskId: string | null, data: Record<string, unknown>): void {
    const createdAt = nowIso();
    const seq = Number(
      this.sql
        .exec<{ seq: number }>(
          "INSERT INTO events (type, task_id, data, created_at) VALUES (?, ?, ?, ?) RETURNING seq",
          type,
          taskId,
          JSON.stringify(data),
          createdAt,
        )
        .one().seq,
    );
    const message = JSON.stringify({ type: "event", seq, taskId, at: createdAt, eventType: type, data });
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.send(message);
      } catch {
        // A socket closing mid-send is dropped; the client reconnects with its last seq.
      }
    }
    const frame = new TextEncoder().encode(
      `id: ${seq}\nevent: ${type}\ndata: ${JSON.stringify({ seq, type, taskId, data, at: createdAt })}\n\n`,
    );
    for (const writer of this.streams) writer.write(frame).catch(() => this.streams.delete(writer));
  }

  /** The project's trace (null for projects created before traces were kept, or without one). */
  private traceparent(): string | undefined {
    const value = this.project()?.traceparent;
    return typeof value === "string" ? value : undefined;
  }

  /** A logger for this object's work, on the project's trace. */
  private log(fields: LogFields = {}): Logger {
    const project = this.project();
    return new Logger({
      component: "ProjectCoordinator",
      requestId: null,
      projectId: project ? String(project.id) : null,
      ...traceFields(continueTrace(this.traceparent())),
      ...fields,
    });
  }

  /**
   * A logger for a change an API request asked for: a child span of that request's trace, so the request's
   * access-log line and what the object did join into one trace tree (falls back to the project's trace).
   */
  private requestLog(traceparent: string | undefined): Logger {
    return this.log(traceFields(continueTrace(traceparent ?? this.traceparent())));
  }

  private projectId(): string {
    return String(this.project()?.id ?? "");
  }

  /** The owner's AccountBudget object: the budget shared by every project of the account. */
  private accountBudget(): DurableObjectStub<AccountBudget> {
    const owner = String(this.project()?.owner_id ?? "");
    return this.env.ACCOUNT_BUDGET.get(this.env.ACCOUNT_BUDGET.idFromName(owner));
  }

  /** Reports finished attempts to the account budget: real usage for settled ones, a release for the rest. */
  private async syncAccountBudget(): Promise<void> {
    const jobs = this.sql
      .exec<Row>("SELECT id, ref FROM schedule WHERE kind = 'account' ORDER BY due_at LIMIT 100")
      .toArray();
    for (const job of jobs) {
      const attemptId = String(job.ref);
      // Spend is known once the execution is recorded; report tokens and spend together after it.
      if (this.row("SELECT 1 AS x FROM schedule WHERE id = ?", `exec:${attemptId}`)) continue;
      const charged = this.row(
        "SELECT tokens FROM budget_entries WHERE attempt_id = ? AND kind = 'settle'",
        attemptId,
      );
      const spend = Number(
        this.row("SELECT spend_micro_usd AS s FROM attempts WHERE id = ?", attemptId)?.s ?? 0,
      );
      try {
        if (charged)
          await this.accountBudget().settle(attemptId, Number(charged.tokens), spend, this.traceparent());
        else await this.accountBudget().release(attemptId);
        this.sql.exec("DELETE FROM schedule WHERE id = ?", job.id);
      } catch (error) {
        this.sql.exec("UPDATE schedule SET due_at = ? WHERE id = ?", Date.now() + 10_000, job.id);
        this.log().error("account budget sync failed", { attemptId, error });
      }
    }
  }

  /**
   * Records settled executions in the marketplace: the capsule's execution count, and for a successful run of a
   * paid capsule the charge in the ledger. Both are idempotent per attempt, so a retried job is harmless.
   */
  private async syncExecutions(): Promise<void> {
    const jobs = this.sql
      .exec<Row>("SELECT id, ref FROM schedule WHERE kind = 'execution' ORDER BY due_at LIMIT 100")
      .toArray();
    if (jobs.length === 0) return;
    const db = database(this.env.DB);
    const project = this.project()!;
    for (const job of jobs) {
      const attempt = this.row(
        "SELECT a.id, a.status, a.capsule_tokens, a.model, a.model_tokens, t.capsule, t.version FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.id = ?",
        job.ref,
      );
      try {
        if (attempt) {
          const spent = await recordExecution(db, {
            attemptId: String(attempt.id),
            succeeded: attempt.status === "succeeded",
            buyerAccountId: String(project.owner_id),
            capsule: String(attempt.capsule),
            version: String(attempt.version),
            tokens: Number(attempt.capsule_tokens),
            model: attempt.model === null ? null : String(attempt.model),
            modelTokens: Number(attempt.model_tokens),
            modelPrices: modelPrices(this.env.MODEL_PRICES),
            projectId: String(project.id),
          });
          this.sql.exec("UPDATE attempts SET spend_micro_usd = ? WHERE id = ?", spent, attempt.id);
        }
        this.sql.exec("DELETE FROM schedule WHERE id = ?", job.id);
      } catch (error) {
        this.sql.exec("UPDATE schedule SET due_at = ? WHERE id = ?", Date.now() + 10_000, job.id);
        this.log().error("execution record failed", { attemptId: job.ref, error });
      }
    }
    await flushOutbox(db, this.env);
  }

  /** Hands unsent events to the events queue as CloudEvents; ids are stable, so a resend is deduplicated. */
  private async flushEvents(): Promise<void> {
    const project = this.project();
    if (!project) return;
    // New events, and events handed over long enough ago that the store should have confirmed them: the
    // first resend after EVENT_RESEND_MS, each further one after twice the wait before (at most 64 times it),
    // so a long analytics outage does not turn into a resend of every event every 30 s.
    const now = Date.now();
    const base = this.eventResendMs();
    const due = `(sent = 0 OR (sent = 1 AND sent_at <= ? - ? * (1 << min(resends, ${MAX_RESEND_DOUBLINGS}))))`;
    const rows = this.sql
      .exec<Row>(`SELECT * FROM events WHERE ${due} ORDER BY seq LIMIT 100`, now, base)
      .toArray();
    if (rows.length === 0) return;
    const traceparent = this.traceparent();
    try {
      await this.env.EVENTS.sendBatch(
        rows.map((e) => {
          const type = String(e.type);
          const data = JSON.parse(String(e.data)) as Record<string, unknown>;
          return {
            contentType: "json" as const,
            body: {
              specversion: "1.0",
              id: `${project.id}:${e.seq}`,
              source: "soma://kamachiq",
              type: type === "usage.tokens" ? "soma.usage.tokens" : `soma.${type}`,
              time: String(e.created_at),
              subject: e.task_id ? `project/${project.id}/task/${e.task_id}` : `project/${project.id}`,
              datacontenttype: "application/json",
              data: {
                ...data,
                projectId: String(project.id),
                accountId: String(project.owner_id),
                ...(e.task_id ? { taskId: e.task_id } : {}),
              },
              ...(traceparent ? { traceparent } : {}),
            },
          };
        }),
      );
      // The same rows: anything emitted while the batch was in flight has a higher seq.
      this.sql.exec(
        `UPDATE events SET resends = resends + (sent = 1), sent = 1, sent_at = ? WHERE ${due} AND seq BETWEEN ? AND ?`,
        Date.now(),
        now,
        base,
        Number(rows[0]!.seq),
        Number(rows[rows.length - 1]!.seq),
      );
    } catch (error) {
      this.log().error("events send failed", { error });
    }
  }

  /** Mirrors the project status and the tasks awaiting a human into D1 for listings. */
  private async syncIndex(): Promise<void> {
    const project = this.project();
    if (!project) return;
    const db = database(this.env.DB);
    const waiting = this.sql
      .exec<Row>("SELECT id, capsule, score FROM tasks WHERE status = 'awaiting_review'")
      .toArray();
    try {
      await db.batch([
        db
          .insert(projects)
          .values({
            id: String(project.id),
            ownerId: String(project.owner_id),
            name: String(project.name),
            status: String(project.status),
            createdAt: String(project.created_at),
            updatedAt: nowIso(),
          })
          .onConflictDoUpdate({
            target: projects.id,
            set: { status: String(project.status), updatedAt: nowIso() },
          }),
        db.delete(reviewTasks).where(and(eq(reviewTasks.projectId, String(project.id)))),
        ...waiting.map((t) =>
          db.insert(reviewTasks).values({
            projectId: String(project.id),
            taskId: String(t.id),
            ownerId: String(project.owner_id),
            capsule: String(t.capsule),
            score: t.score === null ? null : Number(t.score),
            createdAt: nowIso(),
          }),
        ),
      ]);
    } catch (error) {
      this.log().error("project index sync failed", { error });
    }
  }

  private snapshotNow(): ProjectSnapshot {
    const project = this.project()!;
    const edges = this.sql.exec<Row>("SELECT task_id, depends_on FROM edges").toArray();
    const usage = new Map(
      this.sql
        .exec<Row>(
          "SELECT task_id, sum(input_tokens) AS i, sum(output_tokens) AS o, count(*) AS n FROM attempts GROUP BY task_id",
        )
        .toArray()
        .map((r) => [String(r.task_id), { i: Number(r.i), o: Number(r.o), n: Number(r.n) }]),
    );
    const tasks: TaskView[] = this.sql
      .exec<Row>("SELECT * FROM tasks ORDER BY seq")
      .toArray()
      .map((t) => {
        const u = usage.get(String(t.id)) ?? { i: 0, o: 0, n: 0 };
        return {
          id: String(t.id),
          capsule: String(t.capsule),
          version: String(t.version),
          runtime: String(t.runtime),
          status: String(t.status) as TaskStatus,
          dependsOn: edges.filter((e) => e.task_id === t.id).map((e) => String(e.depends_on)),
          attempts: u.n,
          score: t.score === null ? null : Number(t.score),
          usage: { inputTokens: u.i, outputTokens: u.o, totalTokens: u.i + u.o },
          lastError: t.last_error === null ? null : String(t.last_error),
        };
      });
    return {
      id: String(project.id),
      name: String(project.name),
      owner: String(project.owner_handle),
      status: String(project.status) as ProjectStatus,
      failureReason: project.failure_reason === null ? null : String(project.failure_reason),
      createdAt: String(project.created_at),
      updatedAt: String(project.updated_at),
      finishedAt: project.finished_at === null ? null : String(project.finished_at),
      maxParallelAgents: Number(project.max_parallel),
      qualityThreshold: Number(project.quality_threshold),
      tasks,
      budget: this.budget(),
    };
  }

  private retryBaseMs(): number {
    return Number(this.env.KAMACHIQ_RETRY_BASE_MS) || 2_000;
  }

  /**
   * An event handed to the queue but not confirmed stored by the analytics consumer after this long is sent
   * again (its id is stable, so the store keeps one copy): a queue that loses messages loses no events.
   */
  private eventResendMs(): number {
    return Number(this.env.EVENT_RESEND_MS) || 30_000;
  }

  private leaseMs(): number {
    return Number(this.env.KAMACHIQ_LEASE_MS) || 600_000;
  }
}
