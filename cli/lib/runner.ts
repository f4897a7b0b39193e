import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { ApiError, CliError } from "../errors.ts";
import { sha256Hex } from "./bundle.ts";
import type { JobCompletion, RunnerApi, RunnerJob } from "./runner-api.ts";
import { interpreterFor, type ProcessResult, runProcess } from "./runner-process.ts";
import {
  createWorkspace,
  extractTarGz,
  removeWorkspace,
  safeEntryPath,
  type Workspace,
} from "./runner-workspace.ts";
import { type PublishedKey, VerificationError, verifyCapsule } from "./verify-capsule.ts";

/** Something the runner did, for the command to print (as a line for people or as JSON). */
export type RunnerEvent =
  | { type: "started"; runnerId: string; url: string; concurrency: number }
  | { type: "claimed"; job: RunnerJob }
  | {
      type: "finished";
      job: RunnerJob;
      status: "succeeded" | "failed";
      code?: string;
      message?: string;
      seconds: number;
      settled: boolean | null;
    }
  | { type: "lost"; job: RunnerJob; reason: string }
  | { type: "warning"; message: string }
  | { type: "stopping"; running: number; graceSeconds: number }
  | { type: "abandoning"; running: number }
  | { type: "stopped"; jobs: number };

export interface RunnerOptions {
  api: RunnerApi;
  concurrency: number;
  /** Run at most one job per slot, and stop as soon as no job is waiting. */
  once: boolean;
  /** How long each claim waits on the server for a job (long poll), 0-25 s. */
  pollSeconds: number;
  /** Where job workspaces are made (the system temp folder by default). */
  workDir?: string;
  keepWorkspaces: boolean;
  tools: { python: string; node: string; bash: string };
  /** Names of the runner's environment variables that jobs may see besides the basic ones. */
  passEnv: string[];
  /** After a stop request, how long running jobs may take before they are abandoned. */
  graceSeconds: number;
  report: (event: RunnerEvent) => void;
}

/** Limits on what a job downloads and unpacks. */
const BUNDLE_LIMITS = { maxBytes: 64 * 1024 * 1024, maxEntries: 5000 };
const ARTIFACT_LIMITS = { maxBytes: 256 * 1024 * 1024, maxEntries: 20_000 };
/** The platform's caps on a completion (workers/api/routes/runners.ts). */
const MAX_LOG_CHARS = 250_000;
const MAX_ARTIFACTS = 200;
const MAX_ARTIFACT_BYTES = 1024 * 1024;
const MAX_OUTPUT_JSON_BYTES = 4 * 1024 * 1024;
/** Environment variables every job sees (when the runner has them). */
const BASE_ENV = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/** A failure of the job itself, reported to the platform with its code. */
class JobFailure extends Error {
  code: string;
  retryable: boolean;

  constructor(code: string, message: string, retryable: boolean) {
    super(message);
    this.name = "JobFailure";
    this.code = code;
    this.retryable = retryable;
  }
}

/** The default runner id: host name and process id, so several runners on one machine stay distinct. */
export function defaultRunnerId(): string {
  const host =
    hostname()
      .replace(/[^A-Za-z0-9._:-]/g, "-")
      .slice(0, 80) || "runner";
  return `${host}-${process.pid}`;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface RunningJob {
  job: RunnerJob;
  /** Aborted when the job must stop: its claim was lost, or the runner is abandoning it. */
  controller: AbortController;
  lost: string | null;
  abandoned: boolean;
}

/**
 * A runner: claims jobs for runner capsules (long-polling), runs each in a fresh workspace under a time and
 * output limit while heartbeating its lease, and reports the result. Several slots run jobs side by side.
 */
export class Runner {
  private readonly options: RunnerOptions;
  private readonly stopClaims = new AbortController();
  private readonly running = new Map<string, RunningJob>();
  private readonly bundles = new Map<string, Uint8Array>();
  private keys: PublishedKey[] | null = null;
  private stopping = false;
  private fatal: CliError | null = null;
  private jobsDone = 0;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(options: RunnerOptions) {
    this.options = options;
  }

  /** Runs until stopped (or, with `once`, until the slots are done); resolves with the jobs run. */
  async run(): Promise<number> {
    const { api, concurrency } = this.options;
    this.options.report({ type: "started", runnerId: api.runnerId, url: api.url, concurrency });
    await Promise.all(Array.from({ length: concurrency }, () => this.slot()));
    clearTimeout(this.graceTimer);
    this.options.report({ type: "stopped", jobs: this.jobsDone });
    if (this.fatal) throw this.fatal;
    return this.jobsDone;
  }

  /**
   * First call: stop claiming, let running jobs finish within the grace period, then abandon them. A second
   * call abandons them at once. Abandoned jobs are reported failed (retryable) so the task runs again.
   */
  stop(): void {
    if (this.stopping) {
      this.abandonAll();
      return;
    }
    this.stopping = true;
    this.stopClaims.abort();
    if (this.running.size > 0) {
      this.options.report({
        type: "stopping",
        running: this.running.size,
        graceSeconds: this.options.graceSeconds,
      });
      this.graceTimer = setTimeout(() => this.abandonAll(), this.options.graceSeconds * 1000);
    }
  }

  private abandonAll(): void {
    if (this.running.size === 0) return;
    this.options.report({ type: "abandoning", running: this.running.size });
    for (const entry of this.running.values()) {
      entry.abandoned = true;
      entry.controller.abort();
    }
  }

  private async slot(): Promise<void> {
    let backoff = 1000;
    while (!this.stopping) {
      let job: RunnerJob | null;
      try {
        job = await this.options.api.claim(this.options.pollSeconds, this.stopClaims.signal);
        backoff = 1000;
      } catch (error) {
        if (this.stopping) break;
        if (error instanceof ApiError && [400, 401, 403].includes(error.status)) {
          // The token or the runner id is refused: retrying cannot help.
          this.fatal = error;
          this.stop();
          break;
        }
        this.options.report({
          type: "warning",
          message: `claim failed (retrying in ${backoff / 1000} s): ${describe(error)}`,
        });
        await sleep(backoff, this.stopClaims.signal);
        backoff = Math.min(30_000, backoff * 2);
        continue;
      }
      if (job) await this.execute(job);
      if (this.options.once) break;
    }
  }

  private async execute(job: RunnerJob): Promise<void> {
    const entry: RunningJob = { job, controller: new AbortController(), lost: null, abandoned: false };
    this.running.set(job.attemptId, entry);
    this.options.report({ type: "claimed", job });
    const started = Date.now();
    const heartbeat = this.heartbeat(entry);
    let workspace: Workspace | null = null;
    let completion: JobCompletion;
    const notes: string[] = [];
    try {
      workspace = await createWorkspace(this.options.workDir);
      completion = await this.runJob(job, workspace, entry.controller.signal, notes);
    } catch (error) {
      const failure =
        error instanceof JobFailure
          ? error
          : new JobFailure("RUNNER_ERROR", `The runner failed to run the job: ${describe(error)}`, true);
      completion = {
        status: "failed",
        error: { code: failure.code, message: failure.message.slice(0, 4000), retryable: failure.retryable },
        logs: notes.join("\n"),
      };
    }
    if (entry.abandoned && !entry.lost && completion.status === "failed") {
      completion = {
        status: "failed",
        error: {
          code: "RUNNER_STOPPED",
          message: `Runner ${this.options.api.runnerId} stopped before the job finished`,
          retryable: true,
        },
        logs: completion.logs,
      };
    }
    let settled: boolean | null = null;
    let lost = entry.lost;
    if (!lost) {
      try {
        // The heartbeat keeps the lease while the report is retried, so no other runner starts the job meanwhile.
        settled = (await this.complete(job, completion)).settled;
      } catch (error) {
        if (error instanceof ApiError && (error.status === 409 || error.status === 404)) lost = error.message;
        else {
          this.options.report({
            type: "warning",
            message: `could not report ${job.attemptId}: ${describe(error)}; its lease will expire and another runner will retry it`,
          });
        }
      }
    }
    heartbeat.stop();
    this.running.delete(job.attemptId);
    this.jobsDone += 1;
    if (lost) {
      this.options.report({ type: "lost", job, reason: lost });
    } else {
      this.options.report({
        type: "finished",
        job,
        status: completion.status,
        ...(completion.status === "failed"
          ? { code: completion.error.code, message: completion.error.message }
          : {}),
        seconds: (Date.now() - started) / 1000,
        settled,
      });
    }
    if (workspace && !this.options.keepWorkspaces) await removeWorkspace(workspace);
    else if (workspace)
      this.options.report({ type: "warning", message: `kept the workspace ${workspace.root}` });
    if (this.running.size === 0) clearTimeout(this.graceTimer);
  }

  /** Heartbeats the lease at a third of its length (at most every 15 s); a 409 means the job was lost. */
  private heartbeat(entry: RunningJob): { stop: () => void } {
    let leaseUntil = Date.parse(entry.job.leaseUntil);
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const schedule = () => {
      const remaining = Number.isNaN(leaseUntil) ? 15_000 : leaseUntil - Date.now();
      const wait = Math.max(500, Math.min(15_000, remaining / 3));
      timer = setTimeout(beat, wait);
    };
    const beat = async () => {
      if (stopped) return;
      try {
        leaseUntil = Date.parse(await this.options.api.heartbeat(entry.job.attemptId, entry.job.traceparent));
      } catch (error) {
        if (error instanceof ApiError && (error.status === 409 || error.status === 404)) {
          entry.lost = error.message;
          entry.controller.abort();
          return;
        }
        this.options.report({
          type: "warning",
          message: `heartbeat for ${entry.job.attemptId} failed: ${describe(error)}`,
        });
      }
      if (!stopped) schedule();
    };
    schedule();
    return {
      stop: () => {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  /** Reports the result, retrying network failures and server errors a few times. */
  private async complete(job: RunnerJob, completion: JobCompletion) {
    let delay = 1000;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.options.api.complete(job.attemptId, completion, job.traceparent);
      } catch (error) {
        const transient = !(error instanceof ApiError) || error.status >= 500 || error.status === 429;
        if (!transient || attempt >= 5) throw error;
        await sleep(delay);
        delay *= 2;
      }
    }
  }

  private async trustedKeys(refresh: boolean): Promise<PublishedKey[]> {
    if (!this.keys || refresh) {
      const list = await this.options.api.json<{ keys?: unknown }>("/.well-known/soma/keys.json", {
        auth: false,
      });
      if (!Array.isArray(list.keys)) throw new CliError("/.well-known/soma/keys.json has no keys array");
      this.keys = list.keys as PublishedKey[];
    }
    return this.keys;
  }

  /**
   * The capsule's bundle, checked twice: its sha256 must be the one the job names, and its signature and
   * attestation must verify with the platform's published keys (as `soma verify` does).
   */
  private async verifiedBundle(job: RunnerJob, signal: AbortSignal): Promise<Uint8Array> {
    const cached = this.bundles.get(job.sha256);
    if (cached) return cached;
    const api = this.options.api;
    const base = job.bundlePath.replace(/\/bundle$/, "");
    let bytes: Uint8Array;
    let signature: string;
    let attestation: unknown;
    try {
      [bytes, signature, attestation] = await Promise.all([
        api.bytes(job.bundlePath, signal),
        api.text(`${base}/bundle.sig`, signal),
        api.json<unknown>(`${base}/attestation`, { signal }),
      ]);
    } catch (error) {
      throw new JobFailure(
        "BUNDLE_UNAVAILABLE",
        `Cannot download ${job.capsule}@${job.version}: ${describe(error)}`,
        true,
      );
    }
    const digest = sha256Hex(bytes);
    if (digest !== job.sha256) {
      throw new JobFailure(
        "BUNDLE_DIGEST_MISMATCH",
        `The bundle of ${job.capsule}@${job.version} has sha256 ${digest}, but the job names ${job.sha256}`,
        false,
      );
    }
    const verify = async (refresh: boolean) =>
      verifyCapsule({
        name: job.capsule,
        version: job.version,
        bundle: bytes,
        signature,
        attestation,
        trusted: { source: "registry", keys: await this.trustedKeys(refresh) },
      });
    try {
      try {
        await verify(false);
      } catch (error) {
        // The platform may have rotated its key since this runner read the list.
        if (!(error instanceof VerificationError)) throw error;
        await verify(true);
      }
    } catch (error) {
      throw new JobFailure(
        "SIGNATURE_INVALID",
        `${job.capsule}@${job.version} failed verification: ${describe(error)}`,
        false,
      );
    }
    if (this.bundles.size >= 32) this.bundles.delete(this.bundles.keys().next().value as string);
    this.bundles.set(job.sha256, bytes);
    return bytes;
  }

  private jobEnv(job: RunnerJob, workspace: Workspace, entrypoint: string): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const name of [...BASE_ENV, ...this.options.passEnv]) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    return {
      ...env,
      HOME: workspace.homeDir,
      TMPDIR: workspace.tmpDir,
      SOMA_INPUT: workspace.inputFile,
      SOMA_OUTPUT: workspace.outputFile,
      SOMA_WORKSPACE: workspace.root,
      SOMA_CAPSULE_DIR: workspace.capsuleDir,
      SOMA_PROJECT_DIR: workspace.projectDir,
      SOMA_ENTRYPOINT: join(workspace.capsuleDir, entrypoint),
      SOMA_PROJECT_ID: job.projectId,
      SOMA_TASK_ID: job.taskId,
      SOMA_ATTEMPT_ID: job.attemptId,
      SOMA_CAPSULE: `${job.capsule}@${job.version}`,
    };
  }

  /** Everything between the claim and the report: bundle, workspace, the capsule's process, its output. */
  private async runJob(
    job: RunnerJob,
    workspace: Workspace,
    signal: AbortSignal,
    notes: string[],
  ): Promise<JobCompletion> {
    const note = (line: string) => notes.push(`[runner] ${line}`);
    const bundle = await this.verifiedBundle(job, signal);
    note(`${job.capsule}@${job.version}: sha256 ${job.sha256} and signature verified`);
    try {
      await extractTarGz(bundle, workspace.capsuleDir, BUNDLE_LIMITS);
    } catch (error) {
      throw new JobFailure(
        "INVALID_BUNDLE",
        `Cannot unpack ${job.capsule}@${job.version}: ${describe(error)}`,
        false,
      );
    }
    const manifest = parseYaml(await readFile(join(workspace.capsuleDir, "capsule.yaml"), "utf8")) as {
      spec?: { runtime?: unknown; entrypoint?: unknown };
    };
    if (manifest?.spec?.runtime !== "runner") {
      throw new JobFailure("INVALID_BUNDLE", `${job.capsule}@${job.version} is not a runner capsule`, false);
    }
    let entrypoint: string;
    try {
      entrypoint = safeEntryPath(String(manifest.spec.entrypoint ?? ""));
    } catch (error) {
      throw new JobFailure("INVALID_BUNDLE", describe(error), false);
    }
    if (!job.permissions.includes("runner.exec")) {
      throw new JobFailure(
        "PERMISSION_DENIED",
        `${job.capsule} did not declare runner.exec, so no runner may execute it`,
        false,
      );
    }
    const interpreter = interpreterFor(entrypoint, this.options.tools);
    if (!interpreter) {
      throw new JobFailure(
        "UNSUPPORTED_ENTRYPOINT",
        `The runner cannot run ${entrypoint}: entrypoints must be .py (python3), .sh (bash), .js or .mjs (node)`,
        false,
      );
    }

    if (job.permissions.includes("artifacts.read")) {
      let archive: Uint8Array;
      try {
        archive = await this.options.api.bytes(`/v1/projects/${job.projectId}/artifacts.tar.gz`, signal);
      } catch (error) {
        throw new JobFailure(
          "ARTIFACTS_UNAVAILABLE",
          `Cannot download the project's artefacts: ${describe(error)}`,
          true,
        );
      }
      const files = await extractTarGz(archive, workspace.projectDir, ARTIFACT_LIMITS);
      note(`unpacked ${files.length} project artefact(s) into the working directory`);
    }
    await writeFile(workspace.inputFile, JSON.stringify(job.input));

    const timeoutMs = job.timeoutSeconds * 1000;
    note(
      `running ${interpreter} ${entrypoint} (time limit ${job.timeoutSeconds} s, output limit ${job.maxOutputBytes} bytes)`,
    );
    const result = await runProcess({
      command: interpreter,
      args: [join(workspace.capsuleDir, entrypoint)],
      cwd: workspace.projectDir,
      env: this.jobEnv(job, workspace, entrypoint),
      timeoutMs,
      maxOutputBytes: job.maxOutputBytes,
      signal,
    });
    const logs = this.logsOf(notes, result);
    if (result.spawnError) {
      return failed("RUNNER_ERROR", `Cannot start ${interpreter}: ${result.spawnError}`, true, logs);
    }
    if (result.aborted) {
      return failed("RUNNER_STOPPED", "The job was stopped before it finished", true, logs);
    }
    if (result.timedOut) {
      return failed(
        "TIMEOUT",
        `${entrypoint} ran longer than its limit of ${job.timeoutSeconds} s and was killed`,
        true,
        logs,
      );
    }
    if (result.exitCode !== 0) {
      const how = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`;
      const tail = result.stderrTail.trim().split("\n").slice(-10).join("\n");
      return failed(
        result.signal ? "CAPSULE_CRASHED" : "CAPSULE_FAILED",
        `${entrypoint} ${how}${tail ? `: ${tail}` : ""}`,
        true,
        logs,
      );
    }
    return this.readOutput(job, workspace, logs);
  }

  private logsOf(notes: string[], result: ProcessResult): string {
    const footer = [
      `[runner] finished in ${(result.durationMs / 1000).toFixed(1)} s: ${
        result.timedOut
          ? "timed out"
          : result.signal
            ? `signal ${result.signal}`
            : `exit code ${result.exitCode}`
      }`,
      ...(result.truncated
        ? [`[runner] output truncated: kept ${result.log.length} of ${result.outputBytes} bytes`]
        : []),
    ];
    const head = `${notes.join("\n")}\n`;
    const tail = `\n${footer.join("\n")}`;
    const room = MAX_LOG_CHARS - head.length - tail.length;
    return `${head}${result.log.length > room ? result.log.slice(0, room) : result.log}${tail}`;
  }

  /** Reads SOMA_OUTPUT; `artifacts` ([{ path, content }]) is taken out of the output and uploaded. */
  private async readOutput(job: RunnerJob, workspace: Workspace, logs: string): Promise<JobCompletion> {
    let text: string;
    try {
      text = await readFile(workspace.outputFile, "utf8");
    } catch {
      return failed(
        "INVALID_OUTPUT",
        "The capsule exited 0 without writing its result to $SOMA_OUTPUT",
        false,
        logs,
      );
    }
    if (Buffer.byteLength(text) > MAX_OUTPUT_JSON_BYTES) {
      return failed(
        "OUTPUT_TOO_LARGE",
        `The result is larger than ${MAX_OUTPUT_JSON_BYTES} bytes`,
        false,
        logs,
      );
    }
    let output: unknown;
    try {
      output = JSON.parse(text);
    } catch (error) {
      return failed("INVALID_OUTPUT", `$SOMA_OUTPUT is not JSON: ${describe(error)}`, false, logs);
    }
    let artifacts: { path: string; content: string }[] = [];
    if (output !== null && typeof output === "object" && !Array.isArray(output) && "artifacts" in output) {
      const { artifacts: listed, ...rest } = output as { artifacts: unknown } & Record<string, unknown>;
      output = rest;
      if (!Array.isArray(listed) || listed.length > MAX_ARTIFACTS) {
        return failed(
          "INVALID_OUTPUT",
          `output.artifacts must be a list of at most ${MAX_ARTIFACTS} { path, content }`,
          false,
          logs,
        );
      }
      for (const [i, item] of listed.entries()) {
        const { path, content } = (item ?? {}) as { path?: unknown; content?: unknown };
        if (typeof path !== "string" || typeof content !== "string") {
          return failed(
            "INVALID_OUTPUT",
            `output.artifacts[${i}] must be { path: string, content: string }`,
            false,
            logs,
          );
        }
        try {
          safeEntryPath(path);
        } catch {
          return failed(
            "INVALID_OUTPUT",
            `output.artifacts[${i}].path "${path}" is not a relative path`,
            false,
            logs,
          );
        }
        if (Buffer.byteLength(content) > MAX_ARTIFACT_BYTES) {
          return failed(
            "OUTPUT_TOO_LARGE",
            `The artefact ${path} is larger than ${MAX_ARTIFACT_BYTES} bytes`,
            false,
            logs,
          );
        }
      }
      artifacts = listed as { path: string; content: string }[];
    }
    if (artifacts.length > 0 && !job.permissions.includes("artifacts.write")) {
      return failed(
        "PERMISSION_DENIED",
        `${job.capsule} listed artefacts but did not declare artifacts.write`,
        false,
        logs,
      );
    }
    return { status: "succeeded", output, logs, artifacts };
  }
}

function failed(code: string, message: string, retryable: boolean, logs: string): JobCompletion {
  return { status: "failed", error: { code, message: message.slice(0, 4000), retryable }, logs };
}
