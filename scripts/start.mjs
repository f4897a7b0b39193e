/**
 * Runs SomaAgent Edge on this machine from a fresh clone: secrets, D1 migrations, the web app, local
 * services, `wrangler dev`, the first-party account and capsules. Stays in the foreground until SIGINT or
 * SIGTERM, then stops every process it started and exits 0. Prints `SOMA_READY <url>` once usable.
 *
 * Environment:
 *   PORT              port of the API and web app (8787)
 *   SOMA_STATE_DIR    where local state lives (.state); D1, R2, Durable Objects and queues under wrangler/
 *   SOMA_ADMIN_TOKEN  the bootstrap admin bearer; generated once and kept in the secrets file when unset
 *   SOMA_LOG_LEVEL    wrangler's --log-level (warn)
 *   CLICKHOUSE_HTTP_PORT  port of the local ClickHouse (8123; a free one when taken, or when 0)
 *   CLICKHOUSE_URL    use this ClickHouse instead of starting one (with CLICKHOUSE_USER, default "default")
 *   CLICKHOUSE_DATABASE   the Worker's ClickHouse database (soma), migrated from clickhouse/migrations/
 *   CLICKHOUSE_PASSWORD   the ClickHouse password, kept in the secrets file like the admin token
 *   SOMA_RUNNER_LEASE_MS  how long a runner may hold a job without a heartbeat (the Worker's RUNNER_LEASE_MS,
 *                     60000 in wrangler.toml); the e2e tests shorten it to watch a dead runner's job move on
 *   SOMA_WEBHOOK_RETRY_BASE_SECONDS  first retry delay of webhook deliveries in seconds (the Worker's
 *                     WEBHOOK_RETRY_BASE_SECONDS, 30 in wrangler.toml); the e2e tests shorten it to 1
 * Secrets go to .dev.vars, or to <SOMA_STATE_DIR>/.dev.vars when a state directory is given, so a test run
 * never touches the developer's own.
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildWebIfStale } from "./build-web.mjs";
import { chooseHttpPort, requestedHttpPort, startClickHouse } from "./clickhouse.mjs";
import { migrate as migrateClickHouse } from "./clickhouse-migrate.mjs";
import { firstPartyCapsuleDirs, packCapsule } from "./lib/capsule-bundle.mjs";
import { freePort, isAlive, portInUse, stopProcessGroup } from "./lib/processes.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const stateDir = resolve(root, process.env.SOMA_STATE_DIR || ".state");
const secretsFile = process.env.SOMA_STATE_DIR ? join(stateDir, ".dev.vars") : join(root, ".dev.vars");
const persistDir = join(stateDir, "wrangler");
const firstPartyFile = join(stateDir, "first-party.json");
const processesFile = join(stateDir, "processes.json");
const port = Number(process.env.PORT || 8787);
const host = "127.0.0.1";
const baseUrl = `http://${host}:${port}`;
const logLevel = process.env.SOMA_LOG_LEVEL || "warn";
const wranglerBin = join(root, "node_modules", "wrangler", "bin", "wrangler.js");

const FIRST_PARTY = { handle: "soma", email: "capsules@soma.dev" };
const SECRET_NAMES = ["CAPSULE_SIGNING_KEY", "AUTH_SIGNING_KEY", "SOMA_ADMIN_TOKEN", "CLICKHOUSE_PASSWORD"];
const ADMIN_TOKEN_PATTERN = /^[A-Za-z0-9._~+/=-]{16,512}$/;
const READY_TIMEOUT_MS = 180_000;
/** The schedule in wrangler.toml [triggers]; passed to the cron handler on each local tick. */
const CRON = "* * * * *";

/** wrangler dev's advice on running crons by hand: this script runs them (see runScheduled). */
const NOISE =
  /Scheduled Workers are not automatically triggered|manually trigger a scheduled event|cdn-cgi\/local\/scheduled|test-cron-triggers-locally/;

/** Every process group this script started, newest last; all are stopped on exit. */
const started = [];
/** URLs of the local services, recorded with the process groups for tools and the e2e tests. */
const services = {};
let stopping = false;
/** Set once this run has made sure no other start uses the state directory. */
let ownsState = false;
let firstSignalAt = 0;

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const log = (message) => console.log(`[start] ${message}`);
/** A path as the user would type it: relative inside the working directory, absolute outside it. */
const shown = (path) => {
  const rel = relative(process.cwd(), path);
  return rel === "" ? "." : rel.startsWith("..") ? path : rel;
};

class StartError extends Error {}

/** Wrangler and the child processes it starts, quiet and self-contained (no metrics, config in the repo). */
function childEnv(extra = {}) {
  const env = {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    XDG_CONFIG_HOME: join(root, ".wrangler", "config"),
    WRANGLER_REGISTRY_PATH: join(stateDir, "dev-registry"),
    FORCE_COLOR: process.stdout.isTTY ? "1" : "0",
    ...extra,
  };
  // The secrets file is the one source of the Worker's secrets; wrangler would otherwise merge these in.
  for (const name of SECRET_NAMES) delete env[name];
  return env;
}

/**
 * Starts a command in its own process group, forwarding its output line by line with a prefix.
 * @returns {{ name: string, pgid: number, exited: Promise<{ code: number | null, signal: string | null }>, output: string[] }}
 */
function launch(name, command, args, { env = childEnv(), echo = true } = {}) {
  const child = spawn(command, args, { cwd: root, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  const forward = (stream) => {
    let pending = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        output.push(line);
        if (output.length > 200) output.shift();
        if (echo && !stopping && line.trim() !== "" && !NOISE.test(line)) console.log(`[${name}] ${line}`);
      }
    });
  };
  forward(child.stdout);
  forward(child.stderr);
  const exited = new Promise((done) => {
    child.once("error", (error) => {
      output.push(String(error));
      done({ code: null, signal: null });
    });
    child.once("exit", (code, signal) => done({ code, signal }));
  });
  const proc = { name, pgid: child.pid, exited, output };
  if (child.pid) {
    started.push(proc);
    recordProcesses();
  }
  return proc;
}

/** Runs a command to completion; throws with its output when it fails. */
async function runToCompletion(name, command, args, options) {
  const proc = launch(name, command, args, { ...options, echo: false });
  const { code, signal } = await proc.exited;
  started.splice(started.indexOf(proc), 1);
  recordProcesses();
  if (code !== 0) {
    throw new StartError(
      `${name} failed (${signal ?? `exit code ${code}`}):\n${proc.output.join("\n").trim() || "(no output)"}`,
    );
  }
  return proc.output;
}

/**
 * Writes what runs for this state directory, so a second start on it can refuse and tools (and the e2e
 * tests) can tell which process groups belong to it.
 */
function recordProcesses() {
  if (!ownsState) return;
  const record = {
    pid: process.pid,
    url: baseUrl,
    services,
    groups: started.map(({ name, pgid }) => ({ name, pgid })),
  };
  writeFileSync(processesFile, `${JSON.stringify(record, null, 2)}\n`);
}

/** Refuses to share a state directory with a running start: two workerd processes on one SQLite store corrupt it. */
function checkNotRunning() {
  let record;
  try {
    record = JSON.parse(readFileSync(processesFile, "utf8"));
  } catch {
    return;
  }
  const pid = Number(record?.pid);
  if (!Number.isInteger(pid) || pid === process.pid || !isAlive(pid)) return;
  let command = "";
  try {
    command = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return;
  }
  if (command.includes("start.mjs")) {
    throw new StartError(`SomaAgent Edge already runs on ${shown(stateDir)} (pid ${pid}, ${record.url})`);
  }
}

function wrangler(args) {
  return [wranglerBin, ...args];
}

function checkPrerequisites() {
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 22) {
    throw new StartError(
      `Node ${process.versions.node} is too old for wrangler; run this through npm (npm start), which uses the Node 22 from devDependencies`,
    );
  }
  if (!existsSync(wranglerBin)) throw new StartError("Dependencies are missing: run `npm install` first");
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new StartError(`PORT=${process.env.PORT} is not a port`);
  }
}

function pkcs8Pem() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return privateKey.export({ format: "pem", type: "pkcs8" }).toString();
}

/** A dotenv value on one line: wrangler's dotenv parser turns \n inside double quotes back into newlines. */
function dotenvLine(name, value) {
  return `${name}="${value.replaceAll("\n", "\\n")}"`;
}

function dotenvValue(line) {
  const raw = line.slice(line.indexOf("=") + 1).trim();
  const quoted = raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"');
  return quoted ? raw.slice(1, -1).replaceAll("\\n", "\n") : raw.replace(/^'(.*)'$/, "$1");
}

/**
 * Makes sure the secrets file holds the three required secrets, generating what is missing and keeping
 * everything else (including any other lines a developer added). The ClickHouse password is kept there
 * too (empty: none), taken from CLICKHOUSE_PASSWORD when set, so later starts reuse it.
 * @returns {Promise<{ adminToken: string, clickHousePassword: string }>}
 */
async function ensureSecrets() {
  const fromEnv = process.env.SOMA_ADMIN_TOKEN;
  if (fromEnv !== undefined && !ADMIN_TOKEN_PATTERN.test(fromEnv)) {
    throw new StartError("SOMA_ADMIN_TOKEN must be 16-512 characters from A-Z a-z 0-9 . _ ~ + / = -");
  }
  const text = existsSync(secretsFile) ? await readFile(secretsFile, "utf8") : "";
  const lines = text === "" ? [] : text.replace(/\n$/, "").split("\n");
  const indexOf = (name) => lines.findIndex((line) => line.startsWith(`${name}=`));
  const added = [];
  const put = (name, value) => {
    const index = indexOf(name);
    if (index === -1) lines.push(dotenvLine(name, value));
    else lines[index] = dotenvLine(name, value);
    added.push(name);
  };

  for (const name of ["CAPSULE_SIGNING_KEY", "AUTH_SIGNING_KEY"]) {
    if (indexOf(name) === -1) put(name, pkcs8Pem());
  }
  const tokenIndex = indexOf("SOMA_ADMIN_TOKEN");
  const stored = tokenIndex === -1 ? undefined : dotenvValue(lines[tokenIndex]);
  const adminToken =
    fromEnv ?? (stored && ADMIN_TOKEN_PATTERN.test(stored) ? stored : randomBytes(32).toString("base64url"));
  if (adminToken !== stored) put("SOMA_ADMIN_TOKEN", adminToken);
  const passwordIndex = indexOf("CLICKHOUSE_PASSWORD");
  const storedPassword = passwordIndex === -1 ? undefined : dotenvValue(lines[passwordIndex]);
  const clickHousePassword = process.env.CLICKHOUSE_PASSWORD ?? storedPassword ?? "";
  if (clickHousePassword !== storedPassword) put("CLICKHOUSE_PASSWORD", clickHousePassword);

  if (added.length > 0) {
    await mkdir(dirname(secretsFile), { recursive: true });
    await writeFile(secretsFile, `${lines.join("\n")}\n`, { mode: 0o600 });
    await chmod(secretsFile, 0o600);
    log(`wrote ${added.join(", ")} to ${shown(secretsFile)}`);
  }
  return { adminToken, clickHousePassword };
}

async function applyMigrations() {
  const output = await runToCompletion(
    "migrations",
    process.execPath,
    wrangler(["d1", "migrations", "apply", "DB", "--local", "--persist-to", persistDir]),
    { env: childEnv({ CI: "true" }) },
  );
  const applied = output.filter((line) => /\.sql\b.*✅|✅.*\.sql\b/.test(line)).length;
  log(applied > 0 ? `applied ${applied} D1 migration(s)` : "D1 migrations are up to date");
}

/**
 * Tracks a process group started outside `launch`, so it stops with everything else.
 * @param {string} name
 * @param {number} pgid
 * @param {Promise<{ code: number | null, signal: string | null }>} exited
 */
function adopt(name, pgid, exited) {
  if (stopping) {
    // The signal came while it was starting: stopAll may have run already.
    void stopProcessGroup(pgid);
    return;
  }
  started.push({ name, pgid, exited, output: [] });
  recordProcesses();
}

/** Stops the platform when a process it depends on dies on its own. */
function stopWhenExited(name, exited) {
  exited.then(({ code, signal }) => {
    if (stopping) return;
    console.error(`[start] ${name} exited on its own (${signal ?? `exit code ${code}`}); stopping`);
    void shutdown(1);
  });
}

/**
 * ClickHouse for the Worker's analytics: the server given by CLICKHOUSE_URL, or a local one (Debian's
 * clickhouse-server, installed when missing and running as root) with its data under the state directory.
 * Either way the migrations in clickhouse/migrations/ are applied before the Worker starts.
 * @returns {Promise<Record<string, string>>} the Worker vars that point at it
 */
async function startClickHouseService({ stateDir, password }) {
  const database = process.env.CLICKHOUSE_DATABASE || "soma";
  const user = process.env.CLICKHOUSE_USER || "default";
  let url = process.env.CLICKHOUSE_URL?.replace(/\/+$/, "");
  try {
    if (url) {
      log(`using the ClickHouse at ${url} (CLICKHOUSE_URL)`);
    } else {
      const requested = requestedHttpPort();
      const { port: httpPort, replaced } = await chooseHttpPort(requested);
      if (replaced) log(`port ${requested} is in use: ClickHouse listens on ${httpPort} instead`);
      const server = await startClickHouse({
        stateDir,
        httpPort,
        password,
        log: (message) => log(`ClickHouse: ${message}`),
        onSpawn: (pid, exited) => adopt("clickhouse", pid, exited),
      });
      stopWhenExited("ClickHouse", server.exited);
      url = server.url;
      log(`started ClickHouse at ${url} (pid ${server.pid})`);
    }
    services.clickhouse = url;
    recordProcesses();
    const { applied } = await migrateClickHouse({ url, user, password, database });
    log(
      applied.length > 0
        ? `applied ${applied.length} ClickHouse migration(s) to database ${database}`
        : `ClickHouse migrations are up to date (database ${database})`,
    );
  } catch (error) {
    if (stopping) return {};
    throw new StartError(`ClickHouse: ${error.message}`);
  }
  const vars = { CLICKHOUSE_URL: url, CLICKHOUSE_DATABASE: database, CLICKHOUSE_USER: user };
  // wrangler dev hands the Worker only the secrets wrangler.toml declares; an undeclared password goes as a var.
  if (password !== "" && !declaresSecret("CLICKHOUSE_PASSWORD")) vars.CLICKHOUSE_PASSWORD = password;
  return vars;
}

/** Whether wrangler.toml lists a secret in `[secrets] required`. */
function declaresSecret(name) {
  const toml = readFileSync(join(root, "wrangler.toml"), "utf8");
  const required = toml.match(/^\[secrets\][^[]*?^required\s*=\s*\[([^\]]*)\]/m)?.[1] ?? "";
  return required.includes(`"${name}"`);
}

/**
 * Starts the local services the Worker talks to besides its own bindings, before `wrangler dev`. Each
 * returns the Worker vars that point at it, e.g. `{ CLICKHOUSE_URL: "http://127.0.0.1:8123" }`; they reach
 * the Worker as `--var`.
 * @param {{ stateDir: string, clickHousePassword: string }} context
 * @returns {Promise<Record<string, string>>}
 */
async function startLocalServices({ stateDir, clickHousePassword }) {
  return startClickHouseService({ stateDir, password: clickHousePassword });
}

/**
 * Worker vars overridden from this script's environment for local runs (they reach the Worker as --var).
 * @returns {Record<string, string>}
 */
function varOverrides() {
  /** @type {Record<string, string>} */
  const overrides = {};
  const lease = process.env.SOMA_RUNNER_LEASE_MS;
  if (lease !== undefined && lease !== "") {
    if (!/^\d+$/.test(lease) || Number(lease) < 1000) {
      throw new StartError(`SOMA_RUNNER_LEASE_MS must be a number of milliseconds >= 1000, got "${lease}"`);
    }
    overrides.RUNNER_LEASE_MS = lease;
  }
  const retryBase = process.env.SOMA_WEBHOOK_RETRY_BASE_SECONDS;
  if (retryBase !== undefined && retryBase !== "") {
    if (!/^\d+$/.test(retryBase) || Number(retryBase) < 1) {
      throw new StartError(
        `SOMA_WEBHOOK_RETRY_BASE_SECONDS must be a whole number of seconds >= 1, got "${retryBase}"`,
      );
    }
    overrides.WEBHOOK_RETRY_BASE_SECONDS = retryBase;
  }
  return overrides;
}

async function startWorker(vars) {
  if (await portInUse(port)) {
    throw new StartError(`Port ${port} on ${host} is already in use: stop what uses it or set PORT`);
  }
  const inspectorPort = await freePort();
  const varArgs = Object.entries({ ...vars, ...varOverrides(), PUBLIC_URL: baseUrl }).flatMap(([k, v]) => [
    "--var",
    `${k}:${v}`,
  ]);
  return launch(
    "wrangler",
    process.execPath,
    wrangler([
      "dev",
      "--ip",
      host,
      "--port",
      String(port),
      "--inspector-port",
      String(inspectorPort),
      "--persist-to",
      persistDir,
      "--env-file",
      secretsFile,
      "--log-level",
      logLevel,
      "--show-interactive-dev-session=false",
      ...varArgs,
    ]),
  );
}

async function waitForHealth(worker) {
  let exit = null;
  worker.exited.then((result) => {
    exit = result;
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline && !stopping) {
    if (exit) {
      throw new StartError(
        `wrangler dev exited (${exit.signal ?? `exit code ${exit.code}`}) before the API was healthy:\n${worker.output.join("\n")}`,
      );
    }
    try {
      const response = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(5000) });
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(250);
  }
  if (!stopping) {
    throw new StartError(`The API was not healthy at ${baseUrl}/healthz within ${READY_TIMEOUT_MS / 1000} s`);
  }
}

async function api(method, path, { token, json, body, contentType } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers["content-type"] = "application/json";
  else if (contentType) headers["content-type"] = contentType;
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    body: json !== undefined ? JSON.stringify(json) : body,
  });
  const text = await response.text();
  let data = null;
  try {
    data = text === "" ? null : JSON.parse(text);
  } catch {
    data = { raw: text };
  }
  return { status: response.status, data };
}

function describeError(method, path, { status, data }) {
  const error = data?.error;
  return `${method} ${path} answered ${status}${error ? `: ${error.code}: ${error.message}` : ""}`;
}

/**
 * The first-party account's API key: created on the first run and kept in the state directory, because the
 * API shows a key only once.
 */
async function ensureFirstPartyAccount(adminToken) {
  const created = await api("POST", "/v1/accounts", { token: adminToken, json: FIRST_PARTY });
  if (created.status === 201) {
    const record = {
      handle: FIRST_PARTY.handle,
      accountId: created.data.account?.id,
      apiKey: created.data.apiKey,
    };
    await writeFile(firstPartyFile, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    log(`created the first-party account '${FIRST_PARTY.handle}' (API key in ${shown(firstPartyFile)})`);
    return record.apiKey;
  }
  if (created.status !== 409) throw new StartError(describeError("POST", "/v1/accounts", created));
  const stored = existsSync(firstPartyFile) ? JSON.parse(await readFile(firstPartyFile, "utf8")) : null;
  if (stored?.handle !== FIRST_PARTY.handle || typeof stored.apiKey !== "string") {
    throw new StartError(
      `The account '${FIRST_PARTY.handle}' exists but its API key is not in ${shown(firstPartyFile)}; ` +
        `remove ${shown(stateDir)} to start from empty state`,
    );
  }
  return stored.apiKey;
}

/** Marks the first-party account a verified publisher; verifying an already verified account changes nothing. */
async function verifyFirstPartyAccount(adminToken) {
  const path = `/v1/accounts/${FIRST_PARTY.handle}/verified`;
  const verified = await api("PUT", path, { token: adminToken, json: { verified: true } });
  if (verified.status !== 200) throw new StartError(describeError("PUT", path, verified));
}

/** Orders capsule folders so each comes after the first-party capsules it depends on. */
async function inDependencyOrder(dirs) {
  const { parse } = await import("yaml");
  const nodes = new Map();
  for (const dir of dirs) {
    const manifest = parse(await readFile(join(dir, "capsule.yaml"), "utf8"));
    nodes.set(manifest.metadata.name, { dir, deps: Object.keys(manifest.spec?.dependencies ?? {}) });
  }
  const ordered = [];
  const visiting = new Set();
  const visit = (name) => {
    const node = nodes.get(name);
    if (!node || ordered.includes(node.dir)) return;
    if (visiting.has(name)) {
      throw new StartError(`First-party capsules depend on each other in a cycle at ${name}`);
    }
    visiting.add(name);
    for (const dep of node.deps) visit(dep);
    ordered.push(node.dir);
  };
  for (const name of [...nodes.keys()].sort()) visit(name);
  return ordered;
}

/**
 * Runs the Worker's cron handler, as Cloudflare would every minute (`wrangler dev` never does): it re-sends
 * outbox events and finishes approvals that stopped half-way.
 */
async function runScheduled() {
  const response = await fetch(`${baseUrl}/cdn-cgi/local/scheduled?cron=${encodeURIComponent(CRON)}`, {
    signal: AbortSignal.timeout(30_000),
  });
  await response.body?.cancel();
  return response.ok;
}

function startCronTicker() {
  const timer = setInterval(() => {
    runScheduled().catch((error) => {
      if (!stopping) console.error(`[start] the local cron tick failed: ${error.message}`);
    });
  }, 60_000);
  timer.unref();
}

async function approveSubmission(id, adminToken) {
  const path = `/v1/submissions/${id}/decision`;
  const decided = await api("POST", path, {
    token: adminToken,
    json: { decision: "approve", notes: "First-party capsule, approved by scripts/start.mjs" },
  });
  if (decided.status >= 300) throw new StartError(describeError("POST", path, decided));
  return decided.data?.submission?.status;
}

/**
 * Brings a submission that already exists (from an earlier run) to published: approves it if it waits for
 * review and lets the cron finish an approval that stopped half-way.
 */
async function finishEarlierSubmission(label, id, adminToken) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const path = `/v1/submissions/${id}`;
    const found = await api("GET", path, { token: adminToken });
    if (found.status !== 200) throw new StartError(`${label}: ${describeError("GET", path, found)}`);
    const status = found.data.submission?.status;
    if (status === "published") {
      log(`${label} is published`);
      return;
    }
    if (status === "pending_review") await approveSubmission(id, adminToken);
    else if (status === "approved") await runScheduled();
    else throw new StartError(`${label}: submission ${id} is ${status}`);
  }
  throw new StartError(`${label}: submission ${id} did not reach published`);
}

/** Publishes every capsules/<folder>/; versions already published are left alone (name@version is immutable). */
async function publishFirstPartyCapsules(apiKey, adminToken) {
  const dirs = await inDependencyOrder(await firstPartyCapsuleDirs(root));
  for (const dir of dirs) {
    const { name, version, bytes } = await packCapsule(dir);
    const label = `${name}@${version}`;
    const submitted = await api("POST", "/v1/capsules", {
      token: apiKey,
      body: bytes,
      contentType: "application/gzip",
    });
    if (submitted.status === 409) {
      const submissionId = submitted.data?.error?.details?.submissionId;
      if (typeof submissionId === "string") await finishEarlierSubmission(label, submissionId, adminToken);
      else log(`${label} is already published`);
      continue;
    }
    if (submitted.status === 401) {
      throw new StartError(
        `The first-party API key in ${shown(firstPartyFile)} was refused; remove ${shown(stateDir)} to start from empty state`,
      );
    }
    if (submitted.status !== 201) {
      throw new StartError(`${label}: ${describeError("POST", "/v1/capsules", submitted)}`);
    }
    const submission = submitted.data.submission;
    if (submission.status === "pending_review") {
      await approveSubmission(submission.id, adminToken);
      log(`published ${label} (risk ${submission.riskScore}, approved with the admin token)`);
    } else {
      log(`published ${label} (risk ${submission.riskScore}, ${submission.status})`);
    }
  }
}

async function stopAll() {
  for (const proc of [...started].reverse()) {
    const gone = await stopProcessGroup(proc.pgid);
    if (!gone) console.error(`[start] process group ${proc.pgid} (${proc.name}) did not stop`);
  }
  started.length = 0;
  if (ownsState) rmSync(processesFile, { force: true });
}

async function shutdown(exitCode) {
  stopping = true;
  await stopAll();
  process.exit(exitCode);
}

function onSignal(signal) {
  const now = Date.now();
  if (stopping) {
    // A terminal's Ctrl-C reaches npm and this script at once; only a later signal means "hurry up".
    if (now - firstSignalAt < 2000) return;
    for (const proc of started) {
      try {
        process.kill(-proc.pgid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    process.exit(0);
  }
  firstSignalAt = now;
  log(`${signal}: stopping`);
  void shutdown(0);
}

async function main() {
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, onSignal);
  checkPrerequisites();
  await mkdir(stateDir, { recursive: true });
  checkNotRunning();
  ownsState = true;
  recordProcesses();

  const { adminToken, clickHousePassword } = await ensureSecrets();
  await applyMigrations();
  const web = await buildWebIfStale(root);
  log(web.built ? "built the web app into web/dist" : "web/dist is up to date");
  const vars = await startLocalServices({ stateDir, clickHousePassword });
  if (stopping) return;

  log(`starting wrangler dev on ${baseUrl}`);
  const worker = await startWorker(vars);
  await waitForHealth(worker);
  if (stopping) return;

  const apiKey = await ensureFirstPartyAccount(adminToken);
  await verifyFirstPartyAccount(adminToken);
  await publishFirstPartyCapsules(apiKey, adminToken);
  if (stopping) return;

  startCronTicker();
  worker.exited.then(({ code, signal }) => {
    if (stopping) return;
    console.error(`[start] wrangler dev exited on its own (${signal ?? `exit code ${code}`}); stopping`);
    void shutdown(1);
  });

  console.log(`
SomaAgent Edge is running.
  App:          ${baseUrl}/
  API:          ${baseUrl}/v1
  Health:       ${baseUrl}/healthz
  ClickHouse:   ${vars.CLICKHOUSE_URL} (database ${vars.CLICKHOUSE_DATABASE}${process.env.CLICKHOUSE_URL ? ", from CLICKHOUSE_URL" : `; data in ${shown(stateDir)}/clickhouse/`})
  Admin token:  ${adminToken}
                (send it as "Authorization: Bearer <token>"; kept in ${shown(secretsFile)})
  State:        ${shown(stateDir)}/ (D1, R2, Durable Objects and queues in wrangler/, ClickHouse in clickhouse/,
                first-party key in first-party.json)
  Cron:         this script runs the Worker's scheduled handler every minute (wrangler dev does not)
Stop with Ctrl-C.`);
  console.log(`SOMA_READY ${baseUrl}`);
}

main().catch(async (error) => {
  if (stopping) return;
  console.error(`[start] ${error instanceof StartError ? error.message : (error?.stack ?? error)}`);
  await shutdown(1);
});
