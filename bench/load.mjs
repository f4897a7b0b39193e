/**
 * Load benchmark: many concurrent clients with a realistic mix (catalog search, capsule detail, install,
 * project status, event ingestion; bench/lib/mix.mjs) against the platform on the Miniflare API with its queue
 * consumers and a ClickHouse server of the run's own, beside the bare /healthz route driven with the same
 * client count in the same run. Reports throughput, p50/p95/p99 and errors (connection errors, timeouts,
 * non-2xx separately) per request type and overall. Seeds through the real API first. 127.0.0.1 only; stops by
 * itself; writes bench/results/load-<time>.json.
 *
 * Environment (defaults in brackets):
 *   BENCH_CLIENTS     concurrent clients (connections); a comma-separated list runs each level in turn [1000]
 *   BENCH_SECONDS     how long the mix and the baseline each run [60]
 *   BENCH_CAPSULES    catalog capsules seeded [300]
 *   BENCH_ACCOUNTS    client accounts (installs, events) [200]
 *   BENCH_PROJECTS    KAMACHIQ projects seeded for the status requests [3]
 *   BENCH_TIMEOUT     per-request timeout in seconds [10]
 *   BENCH_THINK_MS    mean think time of a client between an answer and its next request, drawn uniformly from
 *                     [0.5, 1.5] x the mean; 0 sends back to back (closed loop, a saturation test) [5000]
 *   BENCH_EVENTS_SPOOL the Worker's EVENTS_SPOOL: off as in staging and production, or r2 as `npm start`
 *                     runs (one R2 write per accepted batch) [off]
 */

import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startBenchClickHouse } from "./lib/clickhouse.mjs";
import { MIX, runHealth, runMix, seedMix, splitClients } from "./lib/mix.mjs";
import { cpuDelta, cpuSample, workerdPids } from "./lib/proc.mjs";
import { startPlatform } from "./lib/server.mjs";
import { ms, table } from "./lib/stats.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const int = (name, fallback, min = 1) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}`);
  return value;
};
const config = {
  levels: (process.env.BENCH_CLIENTS ?? "1000").split(",").map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 5) throw new Error("BENCH_CLIENTS lists integers >= 5");
    return n;
  }),
  seconds: int("BENCH_SECONDS", 60),
  capsules: int("BENCH_CAPSULES", 300),
  accounts: int("BENCH_ACCOUNTS", 200),
  projects: int("BENCH_PROJECTS", 3),
  timeoutSeconds: int("BENCH_TIMEOUT", 10),
  thinkMs: int("BENCH_THINK_MS", 5000, 0),
  spool: process.env.BENCH_EVENTS_SPOOL ?? "off",
};
if (!["off", "r2"].includes(config.spool)) throw new Error("BENCH_EVENTS_SPOOL is off or r2");
const GOAL_P95_MS = 500;
const WARMUP_SECONDS = 5;
const log = (message) => console.log(`[bench] ${message}`);

/** Open-file limit: each client is a socket in this process (and one in workerd). */
function fileLimit() {
  try {
    const soft = Number(execFileSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" }).trim());
    const hard = Number(execFileSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).trim());
    return { soft, hard };
  } catch {
    return { soft: Number.NaN, hard: Number.NaN };
  }
}

export function machine() {
  const list = cpus();
  return {
    cores: list.length,
    cpu: list[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadAverage: loadavg().map((v) => Number(v.toFixed(2))),
  };
}

export async function versions() {
  const read = async (name) =>
    JSON.parse(await readFile(join(root, "node_modules", name, "package.json"), "utf8")).version;
  return {
    node: process.versions.node,
    miniflare: await read("miniflare"),
    workerd: await read("workerd"),
    autocannon: await read("autocannon"),
  };
}

const row = (name, r) => [
  name,
  r.connections,
  r.requests,
  r.reqPerSec.toFixed(0),
  ms(r.latency.p50),
  ms(r.latency.p95),
  ms(r.latency.p99),
  r.connectionErrors,
  r.timeouts,
  r.non2xx,
  Object.entries(r.statusCodes ?? {})
    .filter(([code]) => !code.startsWith("2"))
    .map(([code, v]) => `${code}x${v.count}`)
    .join(" ") || "-",
];
const HEADERS = [
  "route",
  "clients",
  "requests",
  "req/s",
  "p50 ms",
  "p95 ms",
  "p99 ms",
  "conn err",
  "timeouts",
  "non-2xx",
  "codes",
];

const pacing = () =>
  config.thinkMs > 0
    ? `each client thinking ${config.thinkMs / 2000}-${(1.5 * config.thinkMs) / 1000} s between requests`
    : "back to back (closed loop)";

/** The mix, then the bare health route, at one client count; prints and returns the figures. */
async function level(platform, clickhouse, seed, clients) {
  const pids = workerdPids();
  const split = splitClients(clients);
  log(
    `mix: ${clients} clients (${Object.entries(split)
      .map(([t, n]) => `${t} ${n}`)
      .join(", ")}) for ${config.seconds} s`,
  );
  const mixLoad = [loadavg()[0]];
  let before = cpuSample([...pids, clickhouse.pid]);
  const mix = await runMix(platform.url, seed, {
    clients,
    seconds: config.seconds,
    timeoutSeconds: config.timeoutSeconds,
    thinkMs: config.thinkMs,
    label: `load${clients}`,
  });
  const mixCpu = cpuDelta(before, cpuSample([...pids, clickhouse.pid]));
  mixLoad.push(loadavg()[0]);

  log(`baseline: GET /healthz, ${clients} clients for ${config.seconds} s, ${pacing()}`);
  const load = [loadavg()[0]];
  before = cpuSample([...pids, clickhouse.pid]);
  const health = await runHealth(platform.url, {
    clients,
    seconds: config.seconds,
    timeoutSeconds: config.timeoutSeconds,
    thinkMs: config.thinkMs,
  });
  const healthCpu = cpuDelta(before, cpuSample([...pids, clickhouse.pid]));
  load.push(loadavg()[0]);

  const strip = ({ latencies, ...rest }) => rest;
  const errors = mix.overall.connectionErrors + mix.overall.timeouts + mix.overall.non2xx;
  const result = {
    clients,
    mix: {
      byType: Object.fromEntries(Object.entries(mix.byType).map(([k, v]) => [k, strip(v)])),
      overall: strip(mix.overall),
      loadAverage: mixLoad,
      workerdCores: pids.reduce((n, pid) => n + (mixCpu.perProcess[pid] ?? 0), 0) / mixCpu.wallSeconds,
      benchNodeCores: mixCpu.nodeSeconds / mixCpu.wallSeconds,
    },
    health: {
      ...strip(health),
      loadAverage: load,
      workerdCores: pids.reduce((n, pid) => n + (healthCpu.perProcess[pid] ?? 0), 0) / healthCpu.wallSeconds,
      benchNodeCores: healthCpu.nodeSeconds / healthCpu.wallSeconds,
    },
    goal: {
      p95UnderMs: GOAL_P95_MS,
      p95: mix.overall.latency.p95,
      errors,
      met: mix.overall.latency.p95 < GOAL_P95_MS && errors === 0,
    },
  };
  console.log("");
  console.log(
    table(HEADERS, [
      ...MIX.map((m) => row(m.type, mix.byType[m.type])),
      row("overall (mix)", mix.overall),
      row("GET /healthz (baseline)", health),
    ]),
  );
  console.log("");
  console.log(
    `${clients} clients: load average during the mix ${mixLoad.map((v) => v.toFixed(2)).join(" -> ")}, during the baseline ${load.map((v) => v.toFixed(2)).join(" -> ")}; workerd used ${result.mix.workerdCores.toFixed(2)} cores in the mix, ${result.health.workerdCores.toFixed(2)} in the baseline; the bench's own Node ${result.mix.benchNodeCores.toFixed(2)} / ${result.health.benchNodeCores.toFixed(2)}`,
  );
  console.log(
    `${clients} clients: goal (p95 < ${GOAL_P95_MS} ms, zero errors) ${result.goal.met ? "met" : "NOT met"} (p95 ${ms(result.goal.p95)} ms; ${errors} errors beside ${mix.overall.requests} answers; requests counts answers, timeouts are requests abandoned after ${config.timeoutSeconds} s)`,
  );
  console.log("");
  return result;
}

async function main() {
  const runAt = new Date().toISOString();
  const limits = fileLimit();
  const results = { runAt, config, machine: machine(), versions: await versions(), fileLimit: limits };
  log(
    `${results.machine.cores} cores, ${results.machine.cpu}; load average ${results.machine.loadAverage.join(" ")}; ulimit -n ${limits.soft} (hard ${limits.hard})`,
  );
  // Each client holds a socket here and one in workerd, plus the files of both processes.
  const most = Math.max(...config.levels);
  if (Number.isFinite(limits.soft) && limits.soft < most * 2 + 1024) {
    throw new Error(
      `ulimit -n is ${limits.soft}; ${most} clients need about ${most * 2 + 1024} (raise it: ulimit -n ${limits.hard})`,
    );
  }

  const clickhouse = await startBenchClickHouse();
  let platform;
  try {
    platform = await startPlatform(root, {
      queueConsumers: true,
      bindings: { ...clickhouse.bindings, LOG_LEVEL: "warn", EVENTS_SPOOL: config.spool },
    });
    log(`Miniflare at ${platform.url}, ClickHouse at ${clickhouse.url}`);
    const started = performance.now();
    const seed = await seedMix(platform.url, root, {
      capsules: config.capsules,
      accounts: config.accounts,
      projects: config.projects,
      log,
    });
    results.seed = {
      seconds: (performance.now() - started) / 1000,
      capsules: seed.published,
      accounts: seed.clientKeys.length,
      projects: seed.projects.length,
    };
    log(`seeded in ${results.seed.seconds.toFixed(1)} s`);

    // Warm-up at a few clients: compiles the routes, fills the isolate's caches.
    await runMix(platform.url, seed, { clients: 20, seconds: WARMUP_SECONDS, label: "warm" });
    results.levels = [];
    for (const clients of config.levels)
      results.levels.push(await level(platform, clickhouse, seed, clients));
    results.workerErrors = platform.workerErrors.slice(0, 20);
    if (platform.workerErrors.length > 0) {
      console.log(
        `worker error lines: ${platform.workerErrors.length}; first: ${platform.workerErrors[0].slice(0, 300)}`,
      );
    }
    const dir = join(root, "bench", "results");
    await mkdir(dir, { recursive: true });
    const file = join(dir, `load-${runAt.replaceAll(":", "-")}.json`);
    await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
    log(`results in ${file}`);
  } finally {
    await platform?.stop();
    await clickhouse.stop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
