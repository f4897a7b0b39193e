import { spawn } from "node:child_process";
import { extname } from "node:path";

/** How the capsule's process ended, with what it printed (capped). */
export interface ProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Stopped from outside: the runner is shutting down or lost the job. */
  aborted: boolean;
  /** stdout and stderr interleaved as they came, up to the output limit. */
  log: string;
  /** Bytes printed in all, including what did not fit. */
  outputBytes: number;
  truncated: boolean;
  /** The last lines of stderr, for error messages. */
  stderrTail: string;
  durationMs: number;
  /** The process could not be started at all (interpreter missing, ...). */
  spawnError: string | null;
}

export interface ProcessOptions {
  command: string;
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  maxOutputBytes: number;
  /** Aborting stops the process group like a timeout does. */
  signal?: AbortSignal;
  /** Time between SIGTERM and SIGKILL. */
  killGraceMs?: number;
}

const STDERR_TAIL_BYTES = 2000;

/** The interpreter for an entrypoint, by its extension; null when the runner does not know how to run it. */
export function interpreterFor(
  entrypoint: string,
  tools: { python: string; node: string; bash: string },
): string | null {
  switch (extname(entrypoint).toLowerCase()) {
    case ".py":
      return tools.python;
    case ".sh":
      return tools.bash;
    case ".js":
    case ".mjs":
      return tools.node;
    default:
      return null;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
}

/**
 * Runs a command in its own process group with a time limit and an output limit. On timeout or abort the
 * whole group gets SIGTERM, then SIGKILL after the grace period; when the main process exits, whatever it
 * left running in its group is killed too, so a job never leaves processes behind.
 */
export function runProcess(options: ProcessOptions): Promise<ProcessResult> {
  const started = Date.now();
  const grace = options.killGraceMs ?? 3000;
  return new Promise((done) => {
    const chunks: Buffer[] = [];
    let kept = 0;
    let outputBytes = 0;
    let stderrTail = Buffer.alloc(0);
    let timedOut = false;
    let aborted = false;
    let spawnError: string | null = null;
    let killTimer: NodeJS.Timeout | undefined;

    const child = spawn(options.command, options.args, {
      cwd: options.cwd,
      env: options.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });

    const collect = (chunk: Buffer, isStderr: boolean) => {
      outputBytes += chunk.length;
      if (kept < options.maxOutputBytes) {
        const part = chunk.subarray(0, options.maxOutputBytes - kept);
        chunks.push(part);
        kept += part.length;
      }
      if (isStderr) stderrTail = Buffer.concat([stderrTail, chunk]).subarray(-STDERR_TAIL_BYTES);
    };
    child.stdout.on("data", (chunk: Buffer) => collect(chunk, false));
    child.stderr.on("data", (chunk: Buffer) => collect(chunk, true));

    const stop = () => {
      if (child.pid === undefined) return;
      killGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(() => {
        if (child.pid !== undefined) killGroup(child.pid, "SIGKILL");
      }, grace);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, options.timeoutMs);
    const onAbort = () => {
      aborted = true;
      stop();
    };
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });

    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      options.signal?.removeEventListener("abort", onAbort);
      const log = Buffer.concat(chunks).toString("utf8");
      done({
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        timedOut,
        aborted,
        log,
        outputBytes,
        truncated: outputBytes > kept,
        stderrTail: stderrTail.toString("utf8"),
        durationMs: Date.now() - started,
        spawnError,
      });
    };
    child.once("error", (error) => {
      spawnError = error.message;
      if (child.pid === undefined) finish();
    });
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      // Background processes the job started share its group (and may hold the pipes open): end them.
      if (child.pid !== undefined) killGroup(child.pid, "SIGKILL");
      // Give the pipes a moment to drain, then report even if something still holds them.
      const drained = setTimeout(finish, 2000);
      child.once("close", () => {
        clearTimeout(drained);
        finish();
      });
    });
  });
}
