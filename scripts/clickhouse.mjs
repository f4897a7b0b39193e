/**
 * A local ClickHouse server for development and tests: Debian's `clickhouse-server` (18.16), installed with
 * apt when missing and running as root, started as a plain background process (no systemd) that listens on
 * 127.0.0.1 only and keeps its configuration, data and logs under `<stateDir>/clickhouse/`.
 *
 * As a module: `startClickHouse({ stateDir })` and `stopClickHouse(pid)`. As a command, for manual use:
 *
 *   node scripts/clickhouse.mjs start|stop|status      (npm run clickhouse -- start|stop|status)
 *
 * Environment (command): SOMA_STATE_DIR (.state), CLICKHOUSE_HTTP_PORT (8123; 0 picks a free port; a taken
 * port is replaced by a free one), CLICKHOUSE_PASSWORD (the `default` user's password; none by default).
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { freePort, isAlive, portInUse } from "./lib/processes.mjs";

const HOST = "127.0.0.1";
export const DEFAULT_HTTP_PORT = 8123;
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const APT_PACKAGES = ["clickhouse-server", "clickhouse-client"];

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Where one state directory's server keeps everything. */
export function clickHousePaths(stateDir) {
  const dir = join(resolve(stateDir), "clickhouse");
  return {
    dir,
    configFile: join(dir, "config.xml"),
    usersFile: join(dir, "users.xml"),
    data: join(dir, "data"),
    tmp: join(dir, "tmp"),
    userFiles: join(dir, "user_files"),
    formatSchemas: join(dir, "format_schemas"),
    logs: join(dir, "log"),
    serverLog: join(dir, "log", "clickhouse-server.log"),
    errorLog: join(dir, "log", "clickhouse-server.err.log"),
    consoleLog: join(dir, "log", "console.log"),
    serverFile: join(dir, "server.json"),
  };
}

/** The clickhouse-server executable: CLICKHOUSE_SERVER_BIN, else the first on PATH or in the sbin folders. */
export function findClickHouseServer() {
  const candidates = process.env.CLICKHOUSE_SERVER_BIN
    ? [process.env.CLICKHOUSE_SERVER_BIN]
    : [
        ...(process.env.PATH ?? "").split(delimiter),
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
      ]
        .filter(Boolean)
        .map((dir) => join(dir, "clickhouse-server"));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return null;
}

function run(command, args) {
  return new Promise((done, fail) => {
    const child = spawn(command, args, {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    child.once("error", fail);
    child.once("exit", (code, signal) => {
      if (code === 0) done(output);
      else
        fail(
          new Error(
            `${command} ${args.join(" ")} failed (${signal ?? `exit code ${code}`}):\n${tail(output)}`,
          ),
        );
    });
  });
}

/**
 * The clickhouse-server executable, installed from Debian's packages first when it is missing and this
 * process runs as root; otherwise a clear error saying what to install.
 * @param {{ log?: (message: string) => void }} [options]
 */
export async function ensureClickHouseServer({ log = () => {} } = {}) {
  const found = findClickHouseServer();
  if (found) return found;
  if (process.env.CLICKHOUSE_SERVER_BIN) {
    throw new Error(`CLICKHOUSE_SERVER_BIN=${process.env.CLICKHOUSE_SERVER_BIN} is not an executable file`);
  }
  const root = process.getuid?.() === 0;
  const hasApt = existsSync("/usr/bin/apt-get");
  if (!root || !hasApt) {
    throw new Error(
      `clickhouse-server is not installed. Install it (Debian: \`sudo apt-get install -y ${APT_PACKAGES.join(" ")}\`), ` +
        "set CLICKHOUSE_SERVER_BIN to its path, or set CLICKHOUSE_URL to use a ClickHouse that is already running",
    );
  }
  log(`installing ${APT_PACKAGES.join(" ")} (apt-get, as root)`);
  await run("apt-get", ["update", "-qq"]);
  await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...APT_PACKAGES]);
  const installed = findClickHouseServer();
  if (!installed)
    throw new Error(`apt-get installed ${APT_PACKAGES.join(" ")} but clickhouse-server is not on PATH`);
  return installed;
}

const xml = (value) =>
  String(value)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");

/**
 * The server's configuration. No TCP port (the platform speaks HTTP only), no interserver port, caches
 * sized for a laptop. `<yandex>` is the root element 18.16 requires; current servers still accept it.
 */
function serverConfig(paths, httpPort) {
  return `<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.mjs on every start; edits are overwritten. -->
<yandex>
  <logger>
    <level>warning</level>
    <log>${xml(paths.serverLog)}</log>
    <errorlog>${xml(paths.errorLog)}</errorlog>
    <size>10M</size>
    <count>2</count>
  </logger>
  <listen_host>${HOST}</listen_host>
  <http_port>${httpPort}</http_port>
  <path>${xml(`${paths.data}/`)}</path>
  <tmp_path>${xml(`${paths.tmp}/`)}</tmp_path>
  <user_files_path>${xml(`${paths.userFiles}/`)}</user_files_path>
  <format_schema_path>${xml(`${paths.formatSchemas}/`)}</format_schema_path>
  <users_config>${xml(paths.usersFile)}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <max_connections>256</max_connections>
  <max_concurrent_queries>64</max_concurrent_queries>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_server_memory_usage>2147483648</max_server_memory_usage>
  <mlock_executable>false</mlock_executable>
  <!-- As Debian's packaged config: without it idle keep-alive connections hold up a SIGTERM for ~8 s. -->
  <keep_alive_timeout>3</keep_alive_timeout>
</yandex>
`;
}

/** The `default` user, from 127.0.0.1 only; with a password only when one is given (stored as SHA-256). */
function usersConfig(password) {
  const credential = password
    ? `<password_sha256_hex>${createHash("sha256").update(password).digest("hex")}</password_sha256_hex>`
    : "<password></password>";
  return `<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.mjs on every start; edits are overwritten. -->
<yandex>
  <profiles>
    <default>
      <max_memory_usage>1000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
    <default>
      ${credential}
      <networks>
        <ip>127.0.0.1</ip>
        <ip>::1</ip>
      </networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`;
}

/** The last lines of a text. */
function tail(text, lines = 30) {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** What a file gained since it was `from` bytes long. */
function newText(file, from) {
  try {
    return readFileSync(file).subarray(from).toString("utf8");
  } catch {
    return "";
  }
}

function fileSize(file) {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** The end of what the server logged during this start, to explain a failure. */
function failureDetails(paths, errorLogStart) {
  const parts = [];
  for (const [label, file, from] of [
    ["error log", paths.errorLog, errorLogStart],
    ["console", paths.consoleLog, 0],
  ]) {
    const text = tail(newText(file, from));
    if (text) parts.push(`--- ${label} (${file}) ---\n${text}`);
  }
  return parts.length > 0 ? `\n${parts.join("\n")}` : " (it logged nothing)";
}

/** Whether pid is a live clickhouse-server started with this state directory's configuration. */
function isOurServer(pid, paths) {
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return false;
  try {
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return (
      command.some((arg) => arg.includes("clickhouse")) &&
      command.includes(`--config-file=${paths.configFile}`)
    );
  } catch {
    return false;
  }
}

/**
 * The server recorded for a state directory, if it still runs.
 * @param {string} stateDir
 * @returns {{ pid: number, url: string, port: number } | null}
 */
export function runningClickHouse(stateDir) {
  const paths = clickHousePaths(stateDir);
  let record;
  try {
    record = JSON.parse(readFileSync(paths.serverFile, "utf8"));
  } catch {
    return null;
  }
  return isOurServer(record?.pid, paths) ? { pid: record.pid, url: record.url, port: record.port } : null;
}

/** Whether ClickHouse answers /ping at url. */
export async function pingClickHouse(url, timeoutMs = 1000) {
  try {
    const response = await fetch(new URL("ping", url.endsWith("/") ? url : `${url}/`), {
      signal: AbortSignal.timeout(timeoutMs),
    });
    return response.ok && (await response.text()) === "Ok.\n";
  } catch {
    return false;
  }
}

/** Whether pid is a live ClickHouse server (any), so a stale pid now used by another program is left alone. */
function isClickHouseServer(pid) {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("clickhouse");
  } catch {
    return true;
  }
}

/**
 * Stops a server by pid: SIGTERM, then SIGKILL if it is still alive after the timeout. A pid that is not a
 * ClickHouse server (any more) is not signalled.
 * @param {number} pid
 * @param {{ timeoutMs?: number }} [options]
 * @returns {Promise<boolean>} whether it is gone
 */
export async function stopClickHouse(pid, { timeoutMs = STOP_TIMEOUT_MS } = {}) {
  if (!isClickHouseServer(pid)) return true;
  const signal = (name) => {
    try {
      process.kill(pid, name);
    } catch {
      // Already gone.
    }
  };
  signal("SIGTERM");
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(50)) {
    if (!isAlive(pid)) return true;
  }
  signal("SIGKILL");
  for (const deadline = Date.now() + 3000; Date.now() < deadline; await sleep(50)) {
    if (!isAlive(pid)) return true;
  }
  return false;
}

/**
 * Picks the HTTP port: the preferred one when free, else any free port.
 * @param {number} preferred 0 for any free port
 * @returns {Promise<{ port: number, replaced: boolean }>} replaced: the preferred port was taken
 */
export async function chooseHttpPort(preferred) {
  if (preferred !== 0 && !(await portInUse(preferred))) return { port: preferred, replaced: false };
  return { port: await freePort(), replaced: preferred !== 0 };
}

/**
 * Starts ClickHouse on 127.0.0.1 with its configuration, data and logs under `<stateDir>/clickhouse/`, in
 * its own process group, and resolves once it answers /ping. A server left running on the same state
 * directory (by a start that was killed) is stopped first: two servers cannot share a data path.
 * @param {{ stateDir: string, httpPort?: number, password?: string, log?: (message: string) => void,
 *   readyTimeoutMs?: number, onSpawn?: (pid: number, exited: Promise<{ code: number | null,
 *   signal: string | null }>) => void }} options httpPort: omitted or 0 picks a free port; onSpawn: called
 *   as soon as the process exists, before it is ready, so a caller that is interrupted can still stop it
 * @returns {Promise<{ url: string, port: number, pid: number, dir: string,
 *   exited: Promise<{ code: number | null, signal: string | null }>, stop(): Promise<boolean> }>}
 */
export async function startClickHouse({
  stateDir,
  httpPort = 0,
  password = "",
  log = () => {},
  readyTimeoutMs = READY_TIMEOUT_MS,
  onSpawn,
}) {
  const server = await ensureClickHouseServer({ log });
  const paths = clickHousePaths(stateDir);
  const leftover = runningClickHouse(stateDir);
  if (leftover) {
    log(`stopping the ClickHouse left running on this state directory (pid ${leftover.pid})`);
    if (!(await stopClickHouse(leftover.pid))) throw new Error(`ClickHouse pid ${leftover.pid} did not stop`);
  }
  const port = httpPort || (await freePort());
  if (await portInUse(port)) throw new Error(`Port ${port} on ${HOST} is already in use`);

  for (const dir of [paths.data, paths.tmp, paths.userFiles, paths.formatSchemas, paths.logs]) {
    await mkdir(dir, { recursive: true });
  }
  await writeFile(paths.configFile, serverConfig(paths, port));
  await writeFile(paths.usersFile, usersConfig(password), { mode: 0o600 });
  rmSync(paths.serverFile, { force: true });

  // Output goes to a file rather than a pipe so the server outlives this process when the CLI starts it.
  const errorLogStart = fileSize(paths.errorLog);
  const consoleFd = openSync(paths.consoleLog, "w");
  let child;
  try {
    child = spawn(server, [`--config-file=${paths.configFile}`], {
      cwd: paths.dir,
      detached: true,
      stdio: ["ignore", consoleFd, consoleFd],
    });
  } finally {
    closeSync(consoleFd);
  }
  let exit = null;
  const exited = new Promise((done) => {
    child.once("error", (error) => {
      exit = { code: null, signal: null, error };
      done(exit);
    });
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      done(exit);
    });
  });
  child.unref();
  if (child.pid) onSpawn?.(child.pid, exited);

  const url = `http://${HOST}:${port}`;
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    await sleep(50);
    if (exit) {
      const reason = exit.error ? String(exit.error) : (exit.signal ?? `exit code ${exit.code}`);
      throw new Error(
        `clickhouse-server exited before answering /ping (${reason})${failureDetails(paths, errorLogStart)}`,
      );
    }
    if ((await pingClickHouse(url)) && !exit) break;
    if (Date.now() > deadline) {
      if (child.pid) await stopClickHouse(child.pid);
      throw new Error(
        `clickhouse-server did not answer ${url}/ping within ${readyTimeoutMs / 1000} s${failureDetails(paths, errorLogStart)}`,
      );
    }
  }
  const pid = /** @type {number} */ (child.pid);
  await writeFile(paths.serverFile, `${JSON.stringify({ pid, port, url }, null, 2)}\n`);
  return {
    url,
    port,
    pid,
    dir: paths.dir,
    exited,
    async stop() {
      // Once it has exited its pid may belong to another process.
      const gone = exit !== null || (await stopClickHouse(pid));
      if (gone) rmSync(paths.serverFile, { force: true });
      return gone;
    },
  };
}

/** The port the command line asks for: CLICKHOUSE_HTTP_PORT, 8123 by default, 0 for any free port. */
export function requestedHttpPort(value = process.env.CLICKHOUSE_HTTP_PORT) {
  if (value === undefined || value === "") return DEFAULT_HTTP_PORT;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`CLICKHOUSE_HTTP_PORT=${value} is not a port (0 picks a free one)`);
  }
  return port;
}

async function cli(command) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
  const stateDir = resolve(root, process.env.SOMA_STATE_DIR || ".state");
  const log = (message) => console.log(`[clickhouse] ${message}`);
  const running = runningClickHouse(stateDir);
  switch (command) {
    case "start": {
      if (running) {
        log(`already running at ${running.url} (pid ${running.pid})`);
        return 0;
      }
      const requested = requestedHttpPort();
      const { port, replaced } = await chooseHttpPort(requested);
      if (replaced) log(`port ${requested} is in use; using ${port}`);
      const server = await startClickHouse({
        stateDir,
        httpPort: port,
        password: process.env.CLICKHOUSE_PASSWORD,
        log,
      });
      log(`running at ${server.url} (pid ${server.pid}); data and logs in ${server.dir}`);
      log("stop it with: node scripts/clickhouse.mjs stop");
      return 0;
    }
    case "stop": {
      if (!running) {
        log("not running");
        return 0;
      }
      if (!(await stopClickHouse(running.pid))) {
        log(`pid ${running.pid} did not stop`);
        return 1;
      }
      rmSync(clickHousePaths(stateDir).serverFile, { force: true });
      log(`stopped (pid ${running.pid})`);
      return 0;
    }
    case "status": {
      if (!running) {
        log("not running");
        return 3;
      }
      const ok = await pingClickHouse(running.url);
      log(`running at ${running.url} (pid ${running.pid}); /ping ${ok ? "answers Ok." : "does not answer"}`);
      return ok ? 0 : 1;
    }
    default:
      console.error("usage: node scripts/clickhouse.mjs start|stop|status");
      return 2;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  cli(process.argv[2]).then(
    (code) => process.exit(code),
    (error) => {
      console.error(`[clickhouse] ${error.message}`);
      process.exit(1);
    },
  );
}
