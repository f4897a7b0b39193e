import { spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { convertV4MiniflareOptions, Log, LogLevel, Miniflare } from "miniflare";

/** Miniflare's queue broker reports every delivered batch as `QUEUE <queue> <acked>/<total> (<ms>ms)`. */
const QUEUE_BATCH_LINE = /QUEUE\s+(\S+)\s+(\d+)\/(\d+)\s+\((\d+)ms\)/;

/** A Miniflare log that prints nothing and hands each delivered queue batch to `onQueueBatch`. */
class QueueBatchLog extends Log {
  constructor(onQueueBatch) {
    super(LogLevel.INFO);
    this.onQueueBatch = onQueueBatch;
  }

  log(message) {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: strips ANSI colours from Miniflare's lines
    const match = QUEUE_BATCH_LINE.exec(message.replace(/\u001b\[[0-9;]*m/g, ""));
    if (match) {
      this.onQueueBatch({
        at: Date.now(),
        queue: match[1],
        acked: Number(match[2]),
        total: Number(match[3]),
        ms: Number(match[4]),
      });
    }
  }
}

const WORKER_NAME = "soma-agent-edge";
const BUILD_TIMEOUT_MS = 120_000;

function pkcs8Pem() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return privateKey.export({ format: "pem", type: "pkcs8" }).toString();
}

/** Wrangler quiet and self-contained: no metrics, no network look-ups, config inside the repo. */
function wranglerEnv(root) {
  return {
    ...process.env,
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    XDG_CONFIG_HOME: join(root, ".wrangler", "config"),
  };
}

/**
 * Bundles workers/index.ts exactly as a deploy would (`wrangler deploy --dry-run`), into one ES module.
 * @returns {Promise<string>} the path of the bundled module
 */
async function buildWorker(root, outdir) {
  const wranglerBin = join(root, "node_modules", "wrangler", "bin", "wrangler.js");
  const child = spawn(process.execPath, [wranglerBin, "deploy", "--dry-run", "--outdir", outdir], {
    cwd: root,
    env: wranglerEnv(root),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const timer = setTimeout(() => child.kill("SIGTERM"), BUILD_TIMEOUT_MS);
  const code = await new Promise((done) => child.once("close", done));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`wrangler deploy --dry-run failed (${code}):\n${output}`);
  return join(outdir, "index.js");
}

/**
 * Applies migrations/*.sql in order, statement by statement, with wrangler's own SQL splitter (it keeps
 * trigger bodies and the FTS5 table definition whole).
 */
async function applyMigrations(db, dir, splitSqlQuery) {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  for (const file of files) {
    const statements = splitSqlQuery(await readFile(join(dir, file), "utf8"));
    for (const statement of statements) await db.prepare(statement).run();
  }
  return files;
}

/**
 * Starts the Worker on the Miniflare API: one workerd, no dev proxy, the bindings of wrangler.toml, fresh
 * secrets and state in a temp directory. The static assets are left out: every route measured here is
 * matched by `run_worker_first`, so the Worker answers them itself.
 *
 * By default the cron and the queue consumers are left out (request handling only). Benches of the
 * background paths pass `queueConsumers: true` to keep every consumer of wrangler.toml, with the same
 * batch settings (or a list of the queue names whose consumers to keep), and `bindings` for what those
 * consumers talk to (e.g. the ClickHouse vars). `extraWorkers` (Miniflare v4-style worker options, or a
 * function of `{ name, queueConsumers }`: the platform Worker's name and the consumers wrangler.toml declares)
 * run in the same workerd beside the platform, e.g. a stand-in consumer for a queue whose platform consumer
 * is left out.
 * @param {string} root the repository root
 * @param {{ queueConsumers?: boolean | string[], bindings?: Record<string, string>, extraWorkers?: object[] | ((platform: { name: string, queueConsumers: Record<string, object> }) => object[]), onQueueBatch?: (batch: { at: number, queue: string, acked: number, total: number, ms: number }) => void, onLog?: (log: { timestamp: number, level: string, message: string }) => void }} [options]
 *   `onLog` sees every structured log line of workerd (console.* of the Worker), as it arrives.
 *   `onQueueBatch` sees every batch a queue delivered to its consumer: `{ at, queue, acked, total, ms }`
 *   (from Miniflare's own log; `ms` is how long the consumer took).
 *   `port` fixes the listening port (default: a free one).
 *   `restartFrom` is the `persisted` of an earlier platform whose runtime ended (e.g. killed): the new one runs
 *   the same bundle with the same secrets on the same state directory (D1, R2, Durable Objects, queues as
 *   Miniflare persists them), without applying migrations again. Pass the same options otherwise.
 */
export async function startPlatform(root, options = {}) {
  if (options.restartFrom) return startIn(root, options.restartFrom.work, options);
  const work = await mkdtemp(join(tmpdir(), "soma-bench-"));
  try {
    return await startIn(root, work, options);
  } catch (error) {
    await rm(work, { recursive: true, force: true });
    throw error;
  }
}

async function startIn(
  root,
  work,
  {
    queueConsumers = false,
    bindings = {},
    extraWorkers = [],
    onLog,
    onQueueBatch,
    port = 0,
    restartFrom,
  } = {},
) {
  const started = performance.now();
  const scriptPath = restartFrom ? restartFrom.scriptPath : await buildWorker(root, join(work, "build"));
  const buildMs = performance.now() - started;

  const secrets = restartFrom
    ? restartFrom.secrets
    : {
        CAPSULE_SIGNING_KEY: pkcs8Pem(),
        AUTH_SIGNING_KEY: pkcs8Pem(),
        SOMA_ADMIN_TOKEN: randomBytes(24).toString("base64url"),
      };
  // wrangler's config reader takes required secrets from process.env; these are this run's own.
  Object.assign(process.env, secrets, wranglerEnv(root), { WRANGLER_LOG: "warn" });
  const { unstable_getMiniflareWorkerOptions, unstable_splitSqlQuery } = await import("wrangler");
  const { workerOptions } = unstable_getMiniflareWorkerOptions(join(root, "wrangler.toml"));
  // One bundled ES module replaces wrangler's module rules.
  delete workerOptions.modulesRules;
  delete workerOptions.assets;
  // Cron ticks and queue consumers (analytics into ClickHouse, which the bench does not run) would add
  // background work in the middle of a measurement; events wait in their queues instead. Benches of the
  // queues keep the consumers (the cron stays out: it only re-sends outbox rows older than 30 s).
  workerOptions.cronTriggers = [];
  const configuredConsumers = { ...(workerOptions.queueConsumers ?? {}) };
  if (Array.isArray(queueConsumers)) {
    workerOptions.queueConsumers = Object.fromEntries(
      Object.entries(workerOptions.queueConsumers ?? {}).filter(([queue]) => queueConsumers.includes(queue)),
    );
  } else if (!queueConsumers) workerOptions.queueConsumers = {};

  const workerErrors = [];
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      host: "127.0.0.1",
      port,
      // BENCH_INSPECTOR_PORT opens the V8 inspector of the Worker (Chrome DevTools, or a CPU profile taken
      // over the DevTools protocol) while a bench runs.
      ...(process.env.BENCH_INSPECTOR_PORT
        ? { inspectorPort: Number(process.env.BENCH_INSPECTOR_PORT) }
        : {}),
      ...(onQueueBatch ? { log: new QueueBatchLog(onQueueBatch) } : {}),
      resourcePersistencePath: join(work, "state"),
      handleStructuredLogs: (log) => {
        if (log.level === "error") workerErrors.push(log.message);
        onLog?.(log);
      },
      workers: [
        {
          ...workerOptions,
          name: WORKER_NAME,
          // Module names are relative to modulesRoot; the bundle lives outside the repository.
          modules: true,
          scriptPath,
          modulesRoot: dirname(scriptPath),
          bindings: { ...workerOptions.bindings, ...bindings, ...secrets },
        },
        ...(typeof extraWorkers === "function"
          ? extraWorkers({ name: WORKER_NAME, queueConsumers: configuredConsumers })
          : extraWorkers),
      ],
    }),
  );
  let url;
  let db;
  let migrations;
  try {
    url = await mf.ready;
    db = await mf.getD1Database("DB");
    migrations = restartFrom
      ? restartFrom.migrations
      : await applyMigrations(db, join(root, "migrations"), unstable_splitSqlQuery);
  } catch (error) {
    await mf.dispose();
    throw error;
  }
  return {
    url: url.origin,
    mf,
    db,
    secrets,
    workerErrors,
    buildMs,
    migrations,
    persisted: { work, scriptPath, secrets, migrations },
    /** Ends this runtime and keeps its state directory, for a restart with `restartFrom: persisted`. */
    async dispose() {
      await mf.dispose();
    },
    async stop() {
      await mf.dispose();
      await rm(work, { recursive: true, force: true });
    },
  };
}
