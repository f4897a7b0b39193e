import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { freePort, isAlive, liveGroupMembers, stopProcessGroup } from "../../scripts/lib/processes.mjs";

declare module "vitest" {
  export interface ProvidedContext {
    /** Base URL of the running platform, without a trailing slash. */
    baseUrl: string;
    /** The bootstrap admin bearer the platform was started with. */
    adminToken: string;
    /** HTTP URL of the platform's ClickHouse; empty when an external platform did not name one. */
    clickhouseUrl: string;
    /** The platform's state directory (local D1 under `<dir>/wrangler`); empty when external and not named. */
    stateDir: string;
  }
}

const root = path.resolve(import.meta.dirname, "../..");
const READY_TIMEOUT_MS = 240_000;

export interface ProcessGroup {
  name: string;
  pgid: number;
}

export interface RunningPlatform {
  url: string;
  port: number;
  adminToken: string;
  stateDir: string;
  /** The ClickHouse the start script started under the state directory. */
  clickhouseUrl: string;
  /** The start script's own pid; it leads its process group. */
  pid: number;
  /** The process groups the start script launched (wrangler dev and workerd, local services). */
  groups: ProcessGroup[];
  /** Everything the start script printed so far. */
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM to the start script, as a terminal's Ctrl-C would; resolves with how it exited. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `node scripts/start.mjs` the way a developer does, on a free port with its own state directory, admin
 * token and ClickHouse (on a free port too), and resolves once it prints `SOMA_READY <url>`.
 */
export async function startPlatform(options: { stateDir: string; port?: number }): Promise<RunningPlatform> {
  const port = options.port ?? (await freePort());
  const adminToken = `e2e-${randomBytes(24).toString("base64url")}`;
  const logFile = path.join(options.stateDir, "start.log");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    SOMA_STATE_DIR: options.stateDir,
    SOMA_ADMIN_TOKEN: adminToken,
    CLICKHOUSE_HTTP_PORT: "0",
    // A short runner lease lets tests/e2e/runner.test.ts watch a dead runner's job move on in seconds.
    SOMA_RUNNER_LEASE_MS: process.env.SOMA_RUNNER_LEASE_MS || "8000",
    // Webhook retries 1 s, 2 s, 4 s ... apart let tests/e2e/webhooks.test.ts watch a receiver fail and recover.
    SOMA_WEBHOOK_RETRY_BASE_SECONDS: process.env.SOMA_WEBHOOK_RETRY_BASE_SECONDS || "1",
  };
  // The platform under test starts its own ClickHouse, whatever the developer's shell points at.
  for (const name of ["CLICKHOUSE_URL", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD", "CLICKHOUSE_DATABASE"]) {
    delete env[name];
  }
  const child: ChildProcess = spawn(process.execPath, [path.join(root, "scripts/start.mjs")], {
    cwd: root,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error("could not start scripts/start.mjs");

  const output: string[] = [];
  let announcedUrl: string | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const ready = new Promise<string>((resolve, reject) => {
    const onLine = (line: string) => {
      output.push(line);
      appendFileSync(logFile, `${line}\n`);
      const match = line.match(/^SOMA_READY (\S+)$/);
      if (match?.[1]) {
        announcedUrl = match[1];
        resolve(match[1]);
      }
    };
    for (const stream of [child.stdout, child.stderr]) {
      let pending = "";
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        pending += chunk;
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) onLine(line);
      });
    }
    void exited.then(({ code, signal }) => {
      if (!announcedUrl) {
        reject(new Error(`start.mjs exited (${signal ?? code}) before SOMA_READY:\n${output.join("\n")}`));
      }
    });
  });

  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no SOMA_READY within ${READY_TIMEOUT_MS / 1000} s:\n${output.join("\n")}`)),
      READY_TIMEOUT_MS,
    );
  });
  let url: string;
  try {
    url = await Promise.race([ready, timeout]);
  } catch (error) {
    await forceStop(pid, options.stateDir);
    throw error;
  } finally {
    clearTimeout(timer);
  }

  const record = JSON.parse(await readFile(path.join(options.stateDir, "processes.json"), "utf8")) as {
    groups: ProcessGroup[];
    services: { clickhouse: string };
  };
  return {
    url,
    port,
    adminToken,
    stateDir: options.stateDir,
    clickhouseUrl: record.services.clickhouse,
    pid,
    groups: record.groups,
    output,
    exited,
    async stop() {
      if (isAlive(pid)) process.kill(pid, "SIGTERM");
      return exited;
    },
  };
}

/** Last resort when the start script hangs: stop its group and whatever groups it recorded. */
async function forceStop(pid: number, stateDir: string): Promise<void> {
  let groups: ProcessGroup[] = [];
  try {
    groups = JSON.parse(await readFile(path.join(stateDir, "processes.json"), "utf8")).groups ?? [];
  } catch {
    // It never got as far as starting anything.
  }
  await stopProcessGroup(pid);
  for (const group of groups) await stopProcessGroup(group.pgid);
}

/**
 * Starts one platform for every e2e file, or uses the one at SOMA_E2E_URL (with SOMA_E2E_ADMIN_TOKEN and
 * SOMA_E2E_CLICKHOUSE_URL).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.SOMA_E2E_URL;
  if (external) {
    project.provide("baseUrl", external.replace(/\/+$/, ""));
    project.provide("adminToken", process.env.SOMA_E2E_ADMIN_TOKEN ?? "");
    project.provide("clickhouseUrl", process.env.SOMA_E2E_CLICKHOUSE_URL ?? "");
    project.provide("stateDir", process.env.SOMA_E2E_STATE_DIR ?? "");
    return async () => {};
  }
  const stateDir = await mkdtemp(path.join(tmpdir(), "soma-e2e-"));
  const platform = await startPlatform({ stateDir });
  project.provide("baseUrl", platform.url);
  project.provide("adminToken", platform.adminToken);
  project.provide("clickhouseUrl", platform.clickhouseUrl);
  project.provide("stateDir", stateDir);
  return async () => {
    const stopped = await Promise.race([
      platform.stop(),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 30_000)),
    ]);
    if (stopped === null) await forceStop(platform.pid, stateDir);
    // Nothing may outlive the run, ClickHouse included, even if the start script missed a group.
    for (const group of platform.groups) {
      if (liveGroupMembers(group.pgid).length > 0) await stopProcessGroup(group.pgid);
    }
    if (process.env.SOMA_E2E_KEEP_STATE) console.log(`e2e state kept in ${stateDir}`);
    else await rm(stateDir, { recursive: true, force: true });
  };
}
