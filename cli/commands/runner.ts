import { resolve } from "node:path";
import { Logger, type LogLevel, traceFields } from "../../workers/shared/observability/logger.ts";
import { continueTrace, type TraceContext } from "../../workers/shared/observability/trace.ts";
import { integerOption, listOption, stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { requireToken, resolveConnection } from "../config.ts";
import { UsageError } from "../errors.ts";
import { defaultRunnerId, Runner, type RunnerEvent } from "../lib/runner.ts";
import type { RunnerJob } from "../lib/runner-api.ts";
import { RunnerApi } from "../lib/runner-api.ts";
import type { Io } from "../output.ts";

const RUNNER_ID = /^[A-Za-z0-9._:-]{1,100}$/;

function clock(): string {
  return new Date().toISOString().slice(11, 19);
}

const LEVEL: Record<RunnerEvent["type"], LogLevel> = {
  started: "info",
  claimed: "info",
  finished: "info",
  lost: "warn",
  warning: "warn",
  stopping: "info",
  abandoning: "warn",
  stopped: "info",
};

/**
 * One line per event for people, or with --json the platform's structured log lines (one JSON object each,
 * with the job's attempt id as requestId and its trace ids), so runner logs join the platform's by trace.
 */
function printer(io: Io, json: boolean): (event: RunnerEvent) => void {
  const log = new Logger({ component: "runner" }, { sink: (_level, text) => io.stdout(`${text}\n`) });
  // One span per job: the runner's work continues the span of the agent that queued the job.
  const spans = new Map<string, TraceContext>();
  const spanOf = (job: RunnerJob): TraceContext => {
    const known = spans.get(job.attemptId);
    if (known) return known;
    const span = continueTrace(job.traceparent);
    spans.set(job.attemptId, span);
    return span;
  };
  return (event) => {
    if (json) {
      const { job, ...rest } = event as RunnerEvent & { job?: RunnerJob };
      const summary = job
        ? {
            requestId: job.attemptId,
            ...traceFields(spanOf(job)),
            job: {
              attemptId: job.attemptId,
              projectId: job.projectId,
              taskId: job.taskId,
              capsule: job.capsule,
              version: job.version,
              claims: job.claims,
            },
          }
        : {};
      log[LEVEL[event.type]](event.type, { ...rest, ...summary });
      if (job && (event.type === "finished" || event.type === "lost")) spans.delete(job.attemptId);
      return;
    }
    const line = (text: string) => io.stdout(`[${clock()}] ${text}\n`);
    switch (event.type) {
      case "started":
        line(`runner ${event.runnerId} serving ${event.url} with ${event.concurrency} slot(s)`);
        break;
      case "claimed":
        line(
          `claimed ${event.job.attemptId}: task ${event.job.taskId} of project ${event.job.projectId.slice(0, 12)}, ` +
            `${event.job.capsule}@${event.job.version} (claim ${event.job.claims}, time limit ${event.job.timeoutSeconds} s` +
            `${event.job.traceparent ? `, trace ${spanOf(event.job).traceId}` : ""})`,
        );
        break;
      case "finished":
        line(
          `${event.status} ${event.job.attemptId} (task ${event.job.taskId}) in ${event.seconds.toFixed(1)} s` +
            (event.code ? `: ${event.code}: ${event.message}` : "") +
            (event.settled === false ? " (already settled)" : ""),
        );
        break;
      case "lost":
        line(`lost ${event.job.attemptId} (task ${event.job.taskId}): ${event.reason}`);
        break;
      case "warning":
        io.stderr(`[${clock()}] warning: ${event.message}\n`);
        break;
      case "stopping":
        line(
          `stopping: finishing ${event.running} job(s) within ${event.graceSeconds} s (signal again to abandon them)`,
        );
        break;
      case "abandoning":
        line(`abandoning ${event.running} job(s); they are reported failed and will be retried`);
        break;
      case "stopped":
        line(`stopped after ${event.jobs} job(s)`);
        break;
    }
    if (event.type === "finished" || event.type === "lost") spans.delete(event.job.attemptId);
  };
}

/** `soma runner`: serves runner capsules (shell and Python work) for the platform. */
export const runnerCommand: Command = {
  name: "runner",
  summary: "Run jobs of runner capsules (shell, Python) for projects",
  help: `Usage: soma runner [--id <id>] [--concurrency N] [--once] [--poll-seconds N] [--work-dir <dir>]

Claims jobs of runner capsules (POST /v1/runners/claim, long-polling) and runs each in a fresh temporary
workspace: it downloads the capsule's bundle and checks its sha256, signature and attestation, unpacks it
into capsule/, unpacks the project's artefacts into project/ (when the capsule may read them), and runs the
entrypoint there by its extension (.py with python3, .sh with bash, .js/.mjs with node) in its own process
group, under the job's time limit (the group is killed on timeout) and output limit. The lease is renewed
by heartbeats while it runs; if another runner took the job over, the process is stopped. The result is
what the entrypoint writes to $SOMA_OUTPUT as JSON; its "artifacts" ([{ path, content }]) are uploaded as
project artefacts when the capsule declares artifacts.write. The workspace is deleted afterwards.

The job's process sees only PATH, LANG, LC_ALL, LC_CTYPE and TZ from this environment (plus --pass-env),
HOME and TMPDIR inside the workspace, and SOMA_INPUT, SOMA_OUTPUT, SOMA_WORKSPACE, SOMA_CAPSULE_DIR,
SOMA_PROJECT_DIR, SOMA_PROJECT_ID, SOMA_TASK_ID, SOMA_ATTEMPT_ID and SOMA_CAPSULE. Never the token.

An account's API key serves that account's projects; the admin token serves every project.
SIGINT/SIGTERM stop claiming and let running jobs finish within --grace-seconds; a second signal (or the
end of the grace period) abandons them: they are reported failed and retried elsewhere. Exits 0.

Options:
  --id <id>               Runner id (default <hostname>-<pid>)
  --concurrency <n>       Jobs run at the same time (default 1)
  --once                  Run at most one job per slot and exit when no job is waiting
  --poll-seconds <n>      How long each claim waits for a job on the server, 0-25 (default 20)
  --grace-seconds <n>     Time running jobs get to finish after a stop signal (default 30)
  --work-dir <dir>        Where workspaces are made (default the system temp folder)
  --keep-workspaces       Do not delete workspaces (for debugging capsules)
  --python <path>         Python interpreter (default python3)
  --pass-env <names>      Comma-separated environment variables jobs may also see

${COMMON_HELP}`,
  options: {
    id: { type: "string" },
    concurrency: { type: "string" },
    once: { type: "boolean", default: false },
    "poll-seconds": { type: "string" },
    "grace-seconds": { type: "string" },
    "work-dir": { type: "string" },
    "keep-workspaces": { type: "boolean", default: false },
    python: { type: "string" },
    "pass-env": { type: "string" },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }, { io, env, cwd }) {
    const id = stringOption(values, "id") ?? defaultRunnerId();
    if (!RUNNER_ID.test(id)) {
      throw new UsageError("--id must be 1-100 letters, digits, '.', '_', ':' or '-'");
    }
    const concurrency = integerOption(values, "concurrency", 1) ?? 1;
    if (concurrency > 64) throw new UsageError("--concurrency must be at most 64");
    const pollSeconds = integerOption(values, "poll-seconds") ?? 20;
    if (pollSeconds > 25) throw new UsageError("--poll-seconds must be from 0 to 25");
    const graceSeconds = integerOption(values, "grace-seconds") ?? 30;
    const connection = await resolveConnection(values, env);
    const token = requireToken(connection);
    const workDir = stringOption(values, "work-dir");
    const runner = new Runner({
      api: new RunnerApi({ ...connection, token }, id),
      concurrency,
      once: values.once === true,
      pollSeconds,
      graceSeconds,
      ...(workDir ? { workDir: resolve(cwd, workDir) } : {}),
      keepWorkspaces: values["keep-workspaces"] === true,
      tools: { python: stringOption(values, "python") ?? "python3", node: process.execPath, bash: "bash" },
      passEnv: listOption(values, "pass-env"),
      report: printer(io, values.json === true),
    });
    const onSignal = () => runner.stop();
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    try {
      await runner.run();
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
    return 0;
  },
};
