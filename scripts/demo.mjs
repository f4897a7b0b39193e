/**
 * The KAMACHIQ demo, end to end and without a human: launches examples/projects/python-cli-calculator.json
 * on a running platform (`npm start`), serves its runner task with a `soma runner` child process, follows
 * the project until it ends, downloads the report and the artefacts, and proves the generated calculator
 * works by running its unittest suite and its command line here. Exits 0 only if the project completed and
 * those checks passed.
 *
 * Usage: npm run demo [-- --spec <file>] [--out <dir>] [--no-runner] [--timeout <seconds>]
 *
 * Environment:
 *   SOMA_URL        the platform (else the one `npm start` runs for SOMA_STATE_DIR or .state, else :8787)
 *   SOMA_TOKEN      an account API key that owns the project and serves its runner jobs; without it the
 *                   demo signs up a fresh account (open sign-up) and keeps its key in <out>/account.json
 *   SOMA_STATE_DIR  the state directory of `npm start` (.state); output goes to <it>/demo/<time>/ unless --out
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { stopProcessGroup } from "./lib/processes.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const stateDir = resolve(root, process.env.SOMA_STATE_DIR || ".state");
const TERMINAL = new Set(["completed", "failed", "budget_exhausted", "cancelled"]);
/** A project waiting for a human this long is not going to finish on its own in a demo. */
const REVIEW_PATIENCE_MS = 10_000;

const USAGE = `Usage: npm run demo [-- --spec <file>] [--out <dir>] [--no-runner] [--timeout <seconds>]

Launches the KAMACHIQ demo project (examples/projects/python-cli-calculator.json) on the running platform,
serves its runner task with \`soma runner\`, follows it, downloads the report and artefacts, and checks the
generated project with python3. Exits 0 only if the project completed and the checks passed.

  --spec <file>        the project to launch (a POST /v1/projects body)
  --out <dir>          where the report and artefacts go (default <SOMA_STATE_DIR or .state>/demo/<time>/)
  --no-runner          do not start a runner (one must serve this account's jobs, or an admin's)
  --timeout <seconds>  give up after this long (600)

Environment: SOMA_URL (else the platform \`npm start\` runs), SOMA_TOKEN (an account API key; else a new
demo account is signed up and its key kept in <out>/account.json).`;

class DemoError extends Error {}

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`;
const say = (line = "") => console.log(line);
const shown = (path) => {
  const rel = relative(process.cwd(), path);
  return rel === "" ? "." : rel.startsWith("..") ? path : rel;
};
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function options() {
  const { values } = parseArgs({
    options: {
      spec: { type: "string", default: join(root, "examples/projects/python-cli-calculator.json") },
      out: { type: "string" },
      "no-runner": { type: "boolean", default: false },
      timeout: { type: "string", default: "600" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    say(USAGE);
    process.exit(0);
  }
  const timeout = Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout < 10)
    throw new DemoError("--timeout must be a number of seconds >= 10");
  return {
    spec: resolve(values.spec),
    out: values.out ? resolve(values.out) : null,
    runner: !values["no-runner"],
    timeoutMs: timeout * 1000,
  };
}

/** The platform URL: SOMA_URL, else the running `npm start` of the state directory, else the default port. */
function platformUrl() {
  if (process.env.SOMA_URL) return process.env.SOMA_URL.replace(/\/+$/, "");
  try {
    const record = JSON.parse(readFileSync(join(stateDir, "processes.json"), "utf8"));
    if (typeof record.url === "string") return record.url;
  } catch {
    // No running start for this state directory.
  }
  return `http://127.0.0.1:${process.env.PORT || 8787}`;
}

function client(url, token) {
  return async function api(method, path, { json, raw = false, auth = true } = {}) {
    const headers = { accept: "application/json" };
    if (auth && token) headers.authorization = `Bearer ${token}`;
    if (json !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(`${url}${path}`, {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
        signal: AbortSignal.timeout(120_000),
      });
    } catch (error) {
      throw new DemoError(
        `Cannot reach ${url} (${error.cause?.code ?? error.message}). Start the platform with \`npm start\` first, or set SOMA_URL.`,
      );
    }
    if (!response.ok) {
      const text = await response.text();
      let detail = text.slice(0, 300);
      try {
        const { error } = JSON.parse(text);
        detail = `${error.code}: ${error.message}`;
      } catch {
        // Not the platform's error body.
      }
      throw new DemoError(`${method} ${path} answered ${response.status}: ${detail}`);
    }
    if (raw) return new Uint8Array(await response.arrayBuffer());
    return response.status === 204 ? null : response.json();
  };
}

/** The account that owns the project: SOMA_TOKEN, or a fresh one from open sign-up. */
async function account(url, out) {
  if (process.env.SOMA_TOKEN) return { token: process.env.SOMA_TOKEN, handle: null };
  const handle = `demo-${randomBytes(3).toString("hex")}`;
  const created = await client(url, null)("POST", "/v1/accounts", {
    json: { handle, email: `${handle}@demo.soma.dev` },
    auth: false,
  });
  await writeFile(
    join(out, "account.json"),
    `${JSON.stringify({ url, handle, accountId: created.account?.id, apiKey: created.apiKey }, null, 2)}\n`,
    { mode: 0o600 },
  );
  return { token: created.apiKey, handle };
}

/** `soma runner` as a child process in its own group, its lines prefixed; the token goes by environment. */
function startRunner(url, token) {
  const id = `demo-${process.pid}`;
  const child = spawn(
    process.execPath,
    [join(root, "cli/soma.mjs"), "runner", "--url", url, "--id", id, "--concurrency", "2"],
    {
      cwd: root,
      env: { ...process.env, SOMA_TOKEN: token },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  for (const stream of [child.stdout, child.stderr]) {
    let pending = "";
    stream.setEncoding("utf8").on("data", (chunk) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) if (line.trim()) say(`          runner | ${line}`);
    });
  }
  const exited = new Promise((done) => child.once("exit", (code, signal) => done({ code, signal })));
  let stopped = null;
  return {
    id,
    /** SIGTERM: the runner stops claiming and exits once its jobs are done. */
    stop() {
      stopped ??= stopProcessGroup(child.pid, 15_000).then(() => exited);
      return stopped;
    },
  };
}

function gauge(budget) {
  const width = 24;
  const used = Math.min(width, Math.round((budget.spentTokens / budget.limitTokens) * width));
  const held = Math.min(width - used, Math.round((budget.reservedTokens / budget.limitTokens) * width));
  const bar = `${"#".repeat(used)}${"+".repeat(held)}${".".repeat(width - used - held)}`;
  const n = (value) => value.toLocaleString("en-US");
  return `budget [${bar}] ${n(budget.spentTokens)} spent + ${n(budget.reservedTokens)} reserved of ${n(budget.limitTokens)} tokens`;
}

/** Polls the project, printing each task's status changes and the budget, until it ends. */
async function follow(api, id, timeoutMs) {
  const seen = new Map();
  let lastGauge = "";
  let reviewSince = 0;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { project } = await api("GET", `/v1/projects/${id}`);
    for (const task of project.tasks) {
      const key = `${task.status}:${task.attempts}`;
      if (seen.get(task.id) === key) continue;
      seen.set(task.id, key);
      const details = [
        task.attempts > 1 ? `attempt ${task.attempts}` : "",
        task.score !== null ? `gate ${task.score.toFixed(2)}` : "",
        task.usage.totalTokens > 0 ? `${task.usage.totalTokens.toLocaleString("en-US")} tokens` : "",
        task.status !== "completed" && task.lastError ? task.lastError.slice(0, 160) : "",
      ].filter(Boolean);
      say(
        `${elapsed()}  ${task.id.padEnd(10)} ${task.status.padEnd(15)} ${task.capsule.padEnd(28)} ${details.join(", ")}`,
      );
    }
    const line = gauge(project.budget);
    if (line !== lastGauge) {
      say(`${elapsed()}  ${line}`);
      lastGauge = line;
    }
    if (TERMINAL.has(project.status)) return project;
    if (project.status === "awaiting_review") {
      reviewSince ||= Date.now();
      if (Date.now() - reviewSince > REVIEW_PATIENCE_MS) return project;
    } else {
      reviewSince = 0;
    }
    if (Date.now() > deadline)
      throw new DemoError(
        `The project did not finish within ${timeoutMs / 1000} s (it is ${project.status})`,
      );
    await sleep(1000);
  }
}

/** Runs a command and returns its exit code and output. */
function run(command, args, cwd) {
  return new Promise((done) => {
    const child = spawn(command, args, {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c) => (stderr += c));
    child.once("error", (error) => done({ code: null, stdout, stderr: String(error) }));
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

/** The command-line runs the spec documents: each operation's first example, and each error's example. */
function cliCases(inputs) {
  const exitCode = inputs.errorExitCode ?? 2;
  return (inputs.operations ?? []).flatMap((op) => [
    ...(op.examples ?? []).slice(0, 1).map((e) => ({ args: [op.name, e.a, e.b], code: 0, stdout: e.result })),
    ...(op.errors ?? [])
      .filter((e) => e.example)
      .map((e) => ({ args: [op.name, e.example.a, e.example.b], code: exitCode, stderr: e.message })),
  ]);
}

/** Proves the generated project works: its own unittest suite, and the command line as the spec documents it. */
async function check(projectDir, inputs) {
  const pkg = inputs.package;
  say(`\nChecking the result in ${shown(projectDir)}:`);
  const suite = await run("python3", ["-m", "unittest", "discover"], projectDir);
  const summary = `${suite.stderr}${suite.stdout}`
    .trim()
    .split("\n")
    .filter((line) => line.trim() && !line.startsWith("---"))
    .slice(-2)
    .join(", ");
  say(`  $ python3 -m unittest discover   -> exit ${suite.code} (${summary})`);
  let ok = suite.code === 0;
  for (const c of cliCases(inputs)) {
    const result = await run("python3", ["-m", pkg, ...c.args], projectDir);
    const passed =
      result.code === c.code &&
      (c.stdout === undefined || result.stdout.trim() === c.stdout) &&
      (c.stderr === undefined || result.stderr.includes(c.stderr));
    ok &&= passed;
    const shownOutput = (result.stdout.trim() || result.stderr.trim()).split("\n").pop();
    say(
      `  $ python3 -m ${pkg} ${c.args.join(" ").padEnd(12)} -> exit ${result.code}: ${shownOutput}  ${passed ? "ok" : "UNEXPECTED"}`,
    );
  }
  return ok;
}

async function main() {
  if (!process.features.typescript) {
    throw new DemoError(
      `Node ${process.version} cannot run the CLI's TypeScript; run this as \`npm run demo\``,
    );
  }
  const { extractTarGz } = await import("../cli/lib/runner-workspace.ts");
  const opts = options();
  const url = platformUrl();
  const body = JSON.parse(await readFile(opts.spec, "utf8"));
  const inputs = body.spec?.inputs ?? {};
  await client(url, null)("GET", "/healthz", { auth: false });
  say(`SomaAgent Edge at ${url} is up`);
  const planner = body.spec?.planner?.split("@")[0];
  if (planner) {
    await client(url, null)("GET", `/v1/capsules/${planner}`, { auth: false }).catch(() => {
      throw new DemoError(
        `The planner ${planner} is not published on ${url}; \`npm start\` publishes the capsules in capsules/`,
      );
    });
  }

  const out = opts.out ?? join(stateDir, "demo", new Date().toISOString().slice(0, 19).replace(/[-:]/g, ""));
  await mkdir(out, { recursive: true });
  const owner = await account(url, out);
  say(
    owner.handle
      ? `Signed up the demo account ${owner.handle} (API key in ${shown(join(out, "account.json"))})`
      : "Using the account of SOMA_TOKEN",
  );
  const api = client(url, owner.token);

  let runner = null;
  if (opts.runner) {
    runner = startRunner(url, owner.token);
    say(`Started the runner ${runner.id} (soma runner), serving this account's runner jobs`);
  }
  try {
    const { project } = await api("POST", "/v1/projects", { json: body });
    say(`Launched "${project.name}" as project ${project.id}\n`);
    const final = await follow(api, project.id, opts.timeoutMs);
    await runner?.stop();
    const report = (await api("GET", `/v1/projects/${project.id}/report`)).report;
    await writeFile(join(out, "report.json"), `${JSON.stringify(report, null, 2)}\n`);
    const archive = await api("GET", `/v1/projects/${project.id}/artifacts.tar.gz`, { raw: true });
    await writeFile(join(out, "artifacts.tar.gz"), archive);
    const projectDir = join(out, "project");
    await rm(projectDir, { recursive: true, force: true });
    await mkdir(projectDir, { recursive: true });
    const files = await extractTarGz(archive, projectDir, {
      maxBytes: 256 * 1024 * 1024,
      maxEntries: 20_000,
    });

    const t = report.totals;
    say(
      `\nProject ${project.id.slice(0, 12)} ${final.status} in ${t.durationSeconds ?? "?"} s: ` +
        `${t.completed}/${t.tasks} tasks, ${t.attempts} attempts, ${t.spentTokens.toLocaleString("en-US")} of ` +
        `${final.budget.limitTokens.toLocaleString("en-US")} tokens.`,
    );
    if (final.failureReason) say(`  Reason:     ${final.failureReason}`);
    say(
      `  Report:     ${url}/v1/projects/${project.id}/report  (saved to ${shown(join(out, "report.json"))})`,
    );
    say(
      `  Artefacts:  ${url}/v1/projects/${project.id}/artifacts.tar.gz  (saved to ${shown(join(out, "artifacts.tar.gz"))})`,
    );
    say(`  Extracted:  ${shown(projectDir)}/  (${files.length} files)`);
    if (owner.handle)
      say(`  API key:    ${shown(join(out, "account.json"))} (send it as "Authorization: Bearer <apiKey>")`);
    if (final.status !== "completed") {
      for (const task of final.tasks.filter((x) => x.lastError || x.status === "awaiting_review")) {
        say(`  ${task.id}: ${task.status} ${task.lastError ?? ""}`);
      }
      throw new DemoError(`The project ended ${final.status}`);
    }
    if (!existsSync(join(projectDir, String(inputs.package)))) {
      throw new DemoError(`The artefacts hold no ${inputs.package}/ package`);
    }
    if (!(await check(projectDir, inputs)))
      throw new DemoError("The generated project does not pass its checks");
    say("\nDemo passed: the generated project's tests pass and its command line behaves as specified.");
  } finally {
    await runner?.stop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`\n[demo] ${error instanceof DemoError ? error.message : (error?.stack ?? error)}`);
    process.exit(1);
  },
);
