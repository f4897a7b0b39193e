import { z } from "zod";
import type { Connection } from "../config.ts";
import { ApiError, CliError } from "../errors.ts";

/** A job for a runner capsule, as `POST /v1/runners/claim` hands it out. */
export const runnerJobSchema = z.looseObject({
  attemptId: z.string().regex(/^att_[a-f0-9]{32}$/),
  projectId: z.string().regex(/^[a-f0-9]{64}$/),
  taskId: z.string().min(1).max(64),
  capsule: z.string().regex(/^[a-z0-9-]+\/[a-z0-9][a-z0-9._-]*$/),
  version: z.string().min(1).max(100),
  bundlePath: z
    .string()
    .regex(/^\/v1\/capsules\/[^?#]+\/bundle$/, "must be a bundle path on the same server"),
  sha256: z.string().regex(/^[a-f0-9]{64}$/),
  input: z.record(z.string(), z.unknown()),
  reservedTokens: z.number(),
  timeoutSeconds: z.number().int().min(1).max(86_400),
  maxOutputBytes: z
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024),
  permissions: z.array(z.string()),
  leaseUntil: z.string(),
  claims: z.number().int().min(1),
  /** The W3C trace of the project that queued the job (absent from servers that predate it). */
  traceparent: z.string().max(55).optional(),
});

export type RunnerJob = z.output<typeof runnerJobSchema>;

/** What the runner reports when a job ends. */
export type JobCompletion =
  | {
      status: "succeeded";
      output: unknown;
      logs: string;
      artifacts: { path: string; content: string }[];
    }
  | {
      status: "failed";
      error: { code: string; message: string; retryable: boolean };
      logs: string;
    };

/** How long one request may take before the runner gives up on it (long polls get their wait on top). */
const REQUEST_TIMEOUT_MS = 30_000;

function isAbort(error: unknown): boolean {
  const name = (error as { name?: string } | null)?.name;
  return name === "AbortError" || name === "TimeoutError";
}

/** Turns a non-2xx answer into an ApiError carrying the platform's code, message and request id. */
async function apiError(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const error = (JSON.parse(text) as { error?: Record<string, unknown> }).error;
    if (error && typeof error.code === "string" && typeof error.message === "string") {
      const requestId = typeof error.requestId === "string" ? error.requestId : undefined;
      return new ApiError(response.status, error.code, error.message, requestId, error.details);
    }
  } catch {
    // Not the platform's error body (a proxy page, a crash): report the status and the start of the text.
  }
  return new ApiError(
    response.status,
    `HTTP_${response.status}`,
    `${response.status} ${response.statusText}: ${text.trim().slice(0, 200)}`,
  );
}

/** The runner side of the job protocol: claim, heartbeat, complete, and the downloads a job needs. */
export class RunnerApi {
  readonly url: string;
  readonly runnerId: string;
  private readonly token: string;

  constructor(connection: Connection & { token: string }, runnerId: string) {
    this.url = connection.url;
    this.token = connection.token;
    this.runnerId = runnerId;
  }

  private async request(
    method: string,
    path: string,
    options: {
      json?: unknown;
      signal?: AbortSignal;
      timeoutMs?: number;
      auth?: boolean;
      traceparent?: string;
    } = {},
  ): Promise<Response> {
    const headers = new Headers({ accept: "application/json" });
    if (options.traceparent) headers.set("traceparent", options.traceparent);
    if (options.auth !== false) headers.set("authorization", `Bearer ${this.token}`);
    if (options.json !== undefined) headers.set("content-type", "application/json");
    const timeout = AbortSignal.timeout(options.timeoutMs ?? REQUEST_TIMEOUT_MS);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await fetch(`${this.url}${path}`, {
        method,
        headers,
        body: options.json === undefined ? undefined : JSON.stringify(options.json),
        signal,
      });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const reason = isAbort(error)
        ? "timed out"
        : (cause?.code ?? cause?.message ?? (error as Error).message);
      throw new CliError(`${method} ${path}: cannot reach ${this.url}: ${reason}`, { code: "NETWORK" });
    }
    if (!response.ok) throw await apiError(response);
    return response;
  }

  /** Long-polls for a job; null when none came within `waitSeconds`. */
  async claim(waitSeconds: number, signal?: AbortSignal): Promise<RunnerJob | null> {
    const response = await this.request("POST", "/v1/runners/claim", {
      json: { runnerId: this.runnerId, waitSeconds },
      signal,
      timeoutMs: REQUEST_TIMEOUT_MS + waitSeconds * 1000,
    });
    if (response.status === 204) return null;
    const body = (await response.json()) as { job?: unknown };
    const parsed = runnerJobSchema.safeParse(body.job);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new CliError(
        `The server handed out a job this runner cannot read: ${issue?.path.join(".")}: ${issue?.message}`,
        { code: "BAD_RESPONSE" },
      );
    }
    return parsed.data;
  }

  /**
   * Extends the lease; throws ApiError INVALID_STATE (409) when another runner holds the job now. Job calls
   * send the job's `traceparent`, so the platform logs them on the project's trace.
   */
  async heartbeat(attemptId: string, traceparent?: string): Promise<string> {
    const response = await this.request("POST", `/v1/runners/jobs/${attemptId}/heartbeat`, {
      json: { runnerId: this.runnerId },
      traceparent,
    });
    return ((await response.json()) as { leaseUntil: string }).leaseUntil;
  }

  async complete(
    attemptId: string,
    completion: JobCompletion,
    traceparent?: string,
  ): Promise<{ settled: boolean; status: string }> {
    const response = await this.request("POST", `/v1/runners/jobs/${attemptId}/complete`, {
      json: { runnerId: this.runnerId, ...completion },
      timeoutMs: 120_000,
      traceparent,
    });
    return (await response.json()) as { settled: boolean; status: string };
  }

  async bytes(path: string, signal?: AbortSignal): Promise<Uint8Array> {
    const response = await this.request("GET", path, { signal, timeoutMs: 120_000 });
    return new Uint8Array(await response.arrayBuffer());
  }

  async text(path: string, signal?: AbortSignal): Promise<string> {
    return (await this.request("GET", path, { signal })).text();
  }

  async json<T>(path: string, options: { auth?: boolean; signal?: AbortSignal } = {}): Promise<T> {
    return (await (await this.request("GET", path, options)).json()) as T;
  }
}
