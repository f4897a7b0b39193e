import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { stringify } from "yaml";
import { buildTarGz } from "../../cli/lib/bundle.ts";
import { runProcess } from "../../cli/lib/runner-process.ts";
import { extractTarGz, UnsafeArchiveError } from "../../cli/lib/runner-workspace.ts";
import { isAlive } from "../../scripts/lib/processes.mjs";

const root = resolve(import.meta.dirname, "../..");
const baseUrl = (inject("baseUrl") || process.env.SOMA_E2E_URL || "").replace(/\/+$/, "");
const adminToken = inject("adminToken") || process.env.SOMA_E2E_ADMIN_TOKEN || "";

/**
 * A runner capsule that reports what its workspace looks like (or fails on request), so the tests can check
 * what a job sees: the project's artefacts as its working directory, a scrubbed environment, its input.
 */
const INSPECTOR = `import { readdir, readFile, writeFile } from "node:fs/promises";

const input = JSON.parse(await readFile(process.env.SOMA_INPUT, "utf8"));
if (input.sleepSeconds) await new Promise((resolve) => setTimeout(resolve, input.sleepSeconds * 1000));
if (input.failWith) {
  console.error(input.failWith);
  process.exit(3);
}
const files = (await readdir(".", { recursive: true })).sort();
const facts = {
  cwd: process.cwd(),
  projectFiles: files,
  workspace: process.env.SOMA_WORKSPACE,
  home: process.env.HOME,
  envNames: Object.keys(process.env).sort(),
  dependencies: Object.keys(input.dependencies ?? {}),
  task: input.task,
  message: input.message,
};
console.log("inspected " + files.length + " files");
const report = "# Workspace report\\n\\nExample: " + input.message + "\\n\\n\`\`\`json\\n" + JSON.stringify(facts, null, 2) + "\\n\`\`\`\\n";
await writeFile(process.env.SOMA_OUTPUT, JSON.stringify({
  facts,
  files: [{ path: "inspect/report.md", content: report }],
  artifacts: [
    { path: "inspect/report.md", content: report },
    { path: "inspect/facts.json", content: JSON.stringify(facts) },
  ],
}));
`;

/** The only variables a job may see: the basic ones the runner passes on, HOME/TMPDIR and its own. */
const ALLOWED_ENV = new Set([
  "PATH",
  "LANG",
  "LC_ALL",
  "LC_CTYPE",
  "TZ",
  "HOME",
  "TMPDIR",
  "SOMA_INPUT",
  "SOMA_OUTPUT",
  "SOMA_WORKSPACE",
  "SOMA_CAPSULE_DIR",
  "SOMA_PROJECT_DIR",
  "SOMA_ENTRYPOINT",
  "SOMA_PROJECT_ID",
  "SOMA_TASK_ID",
  "SOMA_ATTEMPT_ID",
  "SOMA_CAPSULE",
]);

interface Account {
  handle: string;
  apiKey: string;
}

interface Snapshot {
  status: string;
  failureReason: string | null;
  tasks: { id: string; status: string; attempts: number; score: number | null; lastError: string | null }[];
}

async function api(
  path: string,
  init: { method?: string; token?: string; json?: unknown; headers?: Record<string, string> } = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.json !== undefined) headers["content-type"] = "application/json";
  return fetch(`${baseUrl}${path}`, {
    method: init.method ?? (init.json === undefined ? "GET" : "POST"),
    headers,
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
}

async function signup(): Promise<Account> {
  const handle = `run${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  const res = await api("/v1/accounts", {
    json: { handle, email: `${handle}@example.com` },
    // Each sign-up from its own address, so the per-address sign-up limit does not interfere.
    headers: { "cf-connecting-ip": `198.51.100.${1 + Math.floor(Math.random() * 250)}` },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return { handle, apiKey: ((await res.json()) as { apiKey: string }).apiKey };
}

/** Publishes the inspector under the account; runner capsules wait for review, so the admin approves it. */
async function publishInspector(owner: Account): Promise<string> {
  const name = `${owner.handle}/inspector`;
  const manifest = {
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: { name, version: "1.0.0", category: "Testing", tags: ["runner"], license: "MIT" },
    spec: {
      description: "Reports what a runner job sees.",
      runtime: "runner",
      entrypoint: "run.mjs",
      permissions: ["runner.exec", "artifacts.read", "artifacts.write"],
      tokenEstimate: { planning: 0, execution: 8000 },
    },
  };
  const encode = (text: string) => new TextEncoder().encode(text);
  const bundle = await buildTarGz([
    { path: "capsule.yaml", mode: 0o644, data: encode(stringify(manifest)) },
    { path: "run.mjs", mode: 0o644, data: encode(INSPECTOR) },
  ]);
  const res = await fetch(`${baseUrl}/v1/capsules`, {
    method: "POST",
    headers: { authorization: `Bearer ${owner.apiKey}`, "content-type": "application/gzip" },
    body: new Uint8Array(bundle),
  });
  expect(res.status, await res.clone().text()).toBe(201);
  const { submission } = (await res.json()) as { submission: { id: string; status: string } };
  expect(submission.status).toBe("pending_review");
  const decided = await api(`/v1/submissions/${submission.id}/decision`, {
    token: adminToken,
    json: { decision: "approve", notes: "e2e runner test" },
  });
  expect(decided.status, await decided.clone().text()).toBe(200);
  expect(((await decided.json()) as { submission: { status: string } }).submission.status).toBe("published");
  return name;
}

async function createProject(owner: Account, tasks: unknown[]): Promise<string> {
  const res = await api("/v1/projects", {
    token: owner.apiKey,
    json: {
      name: "runner e2e",
      spec: { tasks, acceptPermissions: ["artifacts.read", "artifacts.write", "runner.exec"] },
      budget: { tokens: 500_000 },
    },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { project: { id: string } }).project.id;
}

async function waitFor(owner: Account, id: string, statuses: string[], timeoutMs: number): Promise<Snapshot> {
  const deadline = Date.now() + timeoutMs;
  let last: Snapshot | null = null;
  while (Date.now() < deadline) {
    const res = await api(`/v1/projects/${id}`, { token: owner.apiKey });
    last = ((await res.json()) as { project: Snapshot }).project;
    if (statuses.includes(last.status)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`project ${id} stayed ${last?.status}: ${JSON.stringify(last?.tasks)}`);
}

interface RunnerProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * `npx soma runner ...` as a user starts it, with the account's key in SOMA_TOKEN (not on the command line).
 * Tests that signal the runner start `cli/soma.mjs` (what `npx soma` runs) directly: npm answers a signal by
 * dying of it, which would hide the runner's own exit code.
 */
function startRunner(owner: Account, args: string[], options: { direct?: boolean } = {}): RunnerProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, SOMA_TOKEN: owner.apiKey, SOMA_CONFIG: "/nonexistent" };
  delete env.SOMA_URL;
  const argv = ["runner", "--url", baseUrl, ...args];
  const child = options.direct
    ? spawn(process.execPath, [join(root, "cli/soma.mjs"), ...argv], {
        cwd: root,
        env,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      })
    : spawn("npx", ["--no-install", "soma", ...argv], {
        cwd: root,
        env,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
  let output = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  return { child, output: () => output, exited };
}

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function artifact(owner: Account, id: string, path: string): Promise<string> {
  const res = await api(`/v1/projects/${id}/artifacts/${path}`, { token: owner.apiKey });
  expect(res.status, path).toBe(200);
  return res.text();
}

const runners: RunnerProcess[] = [];

afterAll(async () => {
  for (const runner of runners) {
    if (runner.child.pid && isAlive(runner.child.pid)) process.kill(-runner.child.pid, "SIGKILL");
  }
});

describe("soma runner against the platform", () => {
  let owner: Account;
  let inspector: string;

  beforeAll(async () => {
    owner = await signup();
    inspector = await publishInspector(owner);
  });

  it("runs a job in a fresh workspace holding the project's artefacts, uploads its artefacts and completes the project", async () => {
    const id = await createProject(owner, [
      {
        id: "readme",
        capsule: "soma/readme-writer@^1",
        inputs: { title: "Runner test", description: "Written before the runner task." },
        successCriteria: ["file:README.md"],
      },
      {
        id: "inspect",
        capsule: `${inspector}@^1`,
        inputs: { message: "hello from the test" },
        dependsOn: ["readme"],
        successCriteria: ["key:facts", "file:inspect/report.md"],
      },
    ]);
    const runner = startRunner(owner, ["--once", "--poll-seconds", "20", "--id", "e2e-runner-once"]);
    runners.push(runner);
    expect(await runner.exited, runner.output()).toBe(0);
    expect(runner.output()).toMatch(/claimed att_[a-f0-9]{32}: task inspect of project/);
    expect(runner.output()).toMatch(/succeeded att_[a-f0-9]{32} \(task inspect\)/);

    const done = await waitFor(owner, id, ["completed", "failed"], 30_000);
    expect(done.status, JSON.stringify(done.tasks)).toBe("completed");
    const inspect = done.tasks.find((t) => t.id === "inspect")!;
    expect(inspect.score).toBeGreaterThanOrEqual(0.8);

    const facts = JSON.parse(await artifact(owner, id, "inspect/facts.json")) as {
      cwd: string;
      projectFiles: string[];
      workspace: string;
      home: string;
      envNames: string[];
      dependencies: string[];
      task: { id: string };
      message: string;
    };
    expect(facts.message).toBe("hello from the test");
    expect(facts.task.id).toBe("inspect");
    expect(facts.dependencies).toEqual(["readme"]);
    expect(facts.projectFiles).toContain("README.md");
    expect(facts.cwd).toBe(join(facts.workspace, "project"));
    expect(facts.home.startsWith(facts.workspace)).toBe(true);
    expect(facts.envNames.filter((name) => !ALLOWED_ENV.has(name))).toEqual([]);
    expect(facts.envNames).not.toContain("SOMA_TOKEN");
    // The workspace is deleted once the job is reported.
    expect(existsSync(facts.workspace)).toBe(false);
    expect(await artifact(owner, id, "inspect/report.md")).toMatch(/^# Workspace report/);
  }, 90_000);

  it("logs --json lines on the project's trace: the traceparent sent with POST /v1/projects reaches the runner", async () => {
    const traceId = randomBytes(16).toString("hex");
    const created = await api("/v1/projects", {
      token: owner.apiKey,
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` },
      json: {
        name: "traced runner e2e",
        spec: {
          tasks: [
            {
              id: "traced",
              capsule: `${inspector}@^1`,
              inputs: { message: "traced" },
              successCriteria: ["key:facts"],
            },
          ],
          acceptPermissions: ["artifacts.read", "artifacts.write", "runner.exec"],
        },
        budget: { tokens: 500_000 },
      },
    });
    expect(created.status, await created.clone().text()).toBe(201);
    expect(created.headers.get("traceparent")).toMatch(new RegExp(`^00-${traceId}-`));
    const id = ((await created.json()) as { project: { id: string } }).project.id;
    const runner = startRunner(owner, ["--json", "--poll-seconds", "5", "--id", "e2e-traced"], {
      direct: true,
    });
    runners.push(runner);
    expect((await waitFor(owner, id, ["completed", "failed"], 60_000)).status).toBe("completed");
    process.kill(-runner.child.pid!, "SIGTERM");
    expect(await runner.exited, runner.output()).toBe(0);
    const lines = runner
      .output()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map(
        (line) =>
          JSON.parse(line) as Record<string, unknown> & { job?: { attemptId: string; taskId: string } },
      );
    const claimed = lines.find((line) => line.msg === "claimed" && line.job?.taskId === "traced");
    expect(claimed).toMatchObject({ level: "info", component: "runner", traceId });
    expect(claimed?.requestId).toBe(claimed?.job?.attemptId);
    const finished = lines.find((line) => line.msg === "finished" && line.job?.taskId === "traced");
    expect(finished).toMatchObject({ traceId, spanId: claimed?.spanId, status: "succeeded" });
  }, 90_000);

  it("exits at once with --once when no job is waiting, and refuses a bad token", async () => {
    const idle = startRunner(owner, ["--once", "--poll-seconds", "0"]);
    runners.push(idle);
    expect(await idle.exited, idle.output()).toBe(0);
    expect(idle.output()).toContain("stopped after 0 job(s)");

    const refused = startRunner({ handle: owner.handle, apiKey: "sk_not-a-key" }, ["--once"]);
    runners.push(refused);
    expect(await refused.exited).toBe(1);
    expect(refused.output()).toMatch(/UNAUTHENTICATED/);
  }, 60_000);

  it("reports a capsule that exits non-zero as failed with its stderr; the task is retried, then fails", async () => {
    const id = await createProject(owner, [
      {
        id: "broken",
        capsule: `${inspector}@^1`,
        inputs: { failWith: "boom: the capsule gave up" },
        successCriteria: ["key:facts"],
      },
    ]);
    const runner = startRunner(owner, ["--poll-seconds", "5", "--id", "e2e-runner-failing"], {
      direct: true,
    });
    runners.push(runner);
    const done = await waitFor(owner, id, ["failed", "completed"], 90_000);
    process.kill(-runner.child.pid!, "SIGTERM");
    expect(await runner.exited, runner.output()).toBe(0);
    expect(done.status).toBe("failed");
    const broken = done.tasks.find((t) => t.id === "broken")!;
    expect(broken.attempts).toBe(4);
    expect(broken.lastError).toMatch(
      /^CAPSULE_FAILED: run\.mjs exited with code 3: boom: the capsule gave up/,
    );
    expect(runner.output().match(/failed att_\w+ \(task broken\)/g)).toHaveLength(4);
  }, 120_000);

  it("finishes its running job on SIGTERM, and on a second signal abandons it so the task is retried", async () => {
    const id = await createProject(owner, [
      {
        id: "slow",
        capsule: `${inspector}@^1`,
        inputs: { message: "slow", sleepSeconds: 3 },
        successCriteria: ["key:facts"],
      },
    ]);
    const draining = startRunner(owner, ["--poll-seconds", "20", "--id", "e2e-draining"], { direct: true });
    runners.push(draining);
    await until(() => draining.output().includes("task slow"), 30_000, "the slow job to be claimed");
    process.kill(-draining.child.pid!, "SIGTERM");
    expect(await draining.exited, draining.output()).toBe(0);
    expect(draining.output()).toContain("stopping: finishing 1 job(s)");
    expect(draining.output()).toMatch(/succeeded att_\w+ \(task slow\)/);
    expect((await waitFor(owner, id, ["completed", "failed"], 30_000)).status).toBe("completed");

    // Its own account: the abandoned task's retry stays queued for this account's runners only.
    const other = await signup();
    const stuck = await createProject(other, [
      {
        id: "sleepy",
        capsule: `${inspector}@^1`,
        inputs: { message: "never", sleepSeconds: 120 },
        successCriteria: ["key:facts"],
      },
    ]);
    const abandoning = startRunner(other, ["--poll-seconds", "20", "--id", "e2e-abandoning"], {
      direct: true,
    });
    runners.push(abandoning);
    await until(() => abandoning.output().includes("task sleepy"), 30_000, "the sleepy job to be claimed");
    const signalled = Date.now();
    process.kill(-abandoning.child.pid!, "SIGTERM");
    await until(() => abandoning.output().includes("stopping:"), 10_000, "the runner to start stopping");
    process.kill(-abandoning.child.pid!, "SIGTERM");
    expect(await abandoning.exited, abandoning.output()).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(20_000);
    expect(abandoning.output()).toContain("abandoning 1 job(s)");
    expect(abandoning.output()).toMatch(/failed att_\w+ \(task sleepy\) in [\d.]+ s: RUNNER_STOPPED/);
    const snapshot = await waitFor(other, stuck, ["running"], 10_000);
    expect(snapshot.tasks[0]?.lastError).toMatch(/^RUNNER_STOPPED: /);
    const cancelled = await api(`/v1/projects/${stuck}/cancel`, { method: "POST", token: other.apiKey });
    expect(cancelled.status).toBe(200);
  }, 120_000);

  it("lets another runner take over a job whose runner died, once the lease runs out, and completes the task", async () => {
    const id = await createProject(owner, [
      {
        id: "orphan",
        capsule: `${inspector}@^1`,
        inputs: { message: "rescued" },
        successCriteria: ["key:facts"],
      },
    ]);
    // A runner that claims the job and then dies: it never heartbeats nor reports.
    const ghost = `ghost-${randomBytes(4).toString("hex")}`;
    const claimed = await api("/v1/runners/claim", {
      token: owner.apiKey,
      json: { runnerId: ghost, waitSeconds: 25 },
    });
    expect(claimed.status).toBe(200);
    const { job } = (await claimed.json()) as {
      job: { attemptId: string; taskId: string; leaseUntil: string; claims: number };
    };
    expect(job.taskId).toBe("orphan");
    expect(job.claims).toBe(1);
    const leaseMs = Date.parse(job.leaseUntil) - Date.now();

    const rescuer = startRunner(owner, ["--poll-seconds", "5", "--id", "e2e-rescuer"], { direct: true });
    runners.push(rescuer);
    const done = await waitFor(owner, id, ["completed", "failed"], leaseMs + 60_000);
    expect(done.status, JSON.stringify(done.tasks)).toBe("completed");
    // Same attempt, second claim: the task was not charged a failure, only moved to a live runner.
    expect(done.tasks[0]?.attempts).toBe(1);
    expect(rescuer.output()).toContain(`claimed ${job.attemptId}: task orphan`);
    expect(rescuer.output()).toContain("(claim 2,");
    expect(JSON.parse(await artifact(owner, id, "inspect/facts.json")).message).toBe("rescued");

    // The dead runner's id no longer holds the job.
    const beat = await api(`/v1/runners/jobs/${job.attemptId}/heartbeat`, {
      token: owner.apiKey,
      json: { runnerId: ghost },
    });
    expect(beat.status).toBe(409);
    expect(((await beat.json()) as { error: { code: string } }).error.code).toBe("INVALID_STATE");
    const late = await api(`/v1/runners/jobs/${job.attemptId}/complete`, {
      token: owner.apiKey,
      json: { runnerId: ghost, status: "succeeded", output: { facts: {} } },
    });
    expect(late.status).toBe(409);

    // SIGTERM: an idle runner stops claiming and exits 0.
    process.kill(-rescuer.child.pid!, "SIGTERM");
    expect(await rescuer.exited, rescuer.output()).toBe(0);
    expect(rescuer.output()).toContain("stopped after 1 job(s)");
  }, 150_000);
});

describe("runner limits (no server)", () => {
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "soma-runner-limits-"));
  });

  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it("kills the whole process group when a job runs past its time limit", async () => {
    const pidFile = join(scratch, "background.pid");
    const started = Date.now();
    const result = await runProcess({
      command: "bash",
      args: ["-c", `sleep 300 & echo $! > ${pidFile}; echo started; sleep 300`],
      cwd: scratch,
      env: { PATH: process.env.PATH },
      timeoutMs: 1000,
      maxOutputBytes: 1024,
      killGraceMs: 1000,
    });
    expect(result.timedOut).toBe(true);
    expect(result.log).toContain("started");
    expect(Date.now() - started).toBeLessThan(10_000);
    const background = Number(await readFile(pidFile, "utf8"));
    expect(isAlive(background)).toBe(false);
  });

  it("keeps at most the output limit and counts what it dropped", async () => {
    const result = await runProcess({
      command: process.execPath,
      args: ["-e", "process.stdout.write('x'.repeat(100000)); process.stderr.write('the end')"],
      cwd: scratch,
      env: { PATH: process.env.PATH },
      timeoutMs: 30_000,
      maxOutputBytes: 1024,
    });
    expect(result.exitCode).toBe(0);
    expect(result.log.length).toBe(1024);
    expect(result.truncated).toBe(true);
    expect(result.outputBytes).toBe(100_007);
    expect(result.stderrTail).toBe("the end");
  });

  it("refuses archives with links or paths that leave the folder", async () => {
    const limits = { maxBytes: 1024 * 1024, maxEntries: 100 };
    const link = gzipSync(
      await packTar([{ header: { name: "evil", size: 0, type: "symlink", linkname: "/etc/passwd" } }]),
    );
    await expect(extractTarGz(link, join(scratch, "a"), limits)).rejects.toThrow(UnsafeArchiveError);
    const leaving = gzipSync(
      await packTar([{ header: { name: "../escape.txt", size: 2, type: "file" }, body: "hi" }]),
    );
    await expect(extractTarGz(leaving, join(scratch, "b"), limits)).rejects.toThrow(
      /not a plain relative path/,
    );
    expect(existsSync(join(scratch, "escape.txt"))).toBe(false);
    const fine = gzipSync(
      await packTar([{ header: { name: "dir/ok.sh", size: 5, type: "file", mode: 0o755 }, body: "echo\n" }]),
    );
    expect(await extractTarGz(fine, join(scratch, "c"), limits)).toEqual(["dir/ok.sh"]);
  });
});
