/**
 * Soak benchmark: the load bench's mix (bench/lib/mix.mjs) at a moderate client count for a long time against
 * the platform on the Miniflare API with its queue consumers and a ClickHouse server of the run's own. Reports
 * availability (share of 2xx answers), p50/p95 per minute, and the resident memory (VmRSS) of the workerd
 * process sampled every 10 s, with a flatness verdict: the least-squares slope of RSS over the second half of
 * the run. Beside RSS, the used JS heap of every isolate (the Worker's, and Miniflare's D1, R2, Queues and cache
 * workers) is read over workerd's V8 inspector at each sample, so growth can be told apart: heap that climbs is
 * JavaScript objects kept alive, RSS that climbs while the heaps stay level is native memory (SQLite page
 * caches of the Durable Objects and D1, allocator slack). After each minute the bench also reads every isolate's
 * retained heap: it takes a heap snapshot of each, which V8 takes only after a full garbage collection, so the
 * figure is what JavaScript objects keep alive, and the verdict on leaks is given on it. Those collections are
 * part of the run: garbage that V8's lazy collector would otherwise carry for a long time in a quiet isolate
 * (Miniflare's Queues broker makes about 3.6 MiB a minute) is freed once a minute, and RSS shows that.
 * The snapshots pause each isolate for a moment, which shows in the minute's highest latencies. 127.0.0.1
 * only; stops by itself; writes
 * bench/results/soak-<time>.json.
 *
 * Environment (defaults in brackets):
 *   BENCH_MINUTES     how long the mix runs, in one-minute rounds [30]
 *   BENCH_CLIENTS     concurrent clients [50]
 *   BENCH_CAPSULES    catalog capsules seeded [300]
 *   BENCH_ACCOUNTS    client accounts [100]
 *   BENCH_PROJECTS    KAMACHIQ projects seeded for the status requests [3]
 */

import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startBenchClickHouse } from "./lib/clickhouse.mjs";
import {
  freePort,
  heapSnapshot,
  heapUsage,
  inspectIsolates,
  retainedHeap,
  snapshotSummary,
} from "./lib/inspector.mjs";
import { combine, MIX, runMix, seedMix } from "./lib/mix.mjs";
import { workerdPids } from "./lib/proc.mjs";
import { startPlatform } from "./lib/server.mjs";
import { ms, summarize, table } from "./lib/stats.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const int = (name, fallback, min = 1) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}`);
  return value;
};
const config = {
  minutes: int("BENCH_MINUTES", 30),
  clients: int("BENCH_CLIENTS", 50),
  capsules: int("BENCH_CAPSULES", 300),
  accounts: int("BENCH_ACCOUNTS", 100),
  projects: int("BENCH_PROJECTS", 3),
};
const GOAL_AVAILABILITY = 0.999;
const RSS_SAMPLE_MS = 10_000;
/** RSS counts as flat when its second-half slope, extrapolated over an hour, stays under this share of its mean. */
const FLAT_SHARE_PER_HOUR = 0.05;
const log = (message) => console.log(`[bench] ${message}`);

/** VmRSS of a process in MiB, or NaN once it is gone. */
function rssMiB(pid) {
  try {
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** `queue_lag_seconds` sum and count per queue from the platform's Prometheus endpoint. */
async function queueLag(base, token) {
  const text = await (
    await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })
  ).text();
  const out = {};
  for (const match of text.matchAll(/^queue_lag_seconds_(sum|count)\{queue="([^"]+)"\} (\S+)$/gm)) {
    out[match[2]] ??= { sum: 0, count: 0 };
    out[match[2]][match[1]] = Number(match[3]);
  }
  return out;
}

/**
 * The trend of `value(p)` over the second half of `points` (by `p.seconds`): the least-squares slope per hour,
 * the mean, and whether it is flat by the rule (points whose value is not a number are left out).
 */
function secondHalfTrend(points, value) {
  const end = points[points.length - 1].seconds;
  const half = points.filter((p) => p.seconds >= end / 2 && Number.isFinite(value(p)));
  const mibPerHour = slope(half.map((p) => ({ x: p.seconds, y: value(p) }))) * 3600;
  const mean = half.reduce((n, p) => n + value(p), 0) / half.length;
  return { mibPerHour, mean, flat: Math.abs(mibPerHour) < FLAT_SHARE_PER_HOUR * mean };
}

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const sx = points.reduce((s, p) => s + p.x, 0);
  const sy = points.reduce((s, p) => s + p.y, 0);
  const sxx = points.reduce((s, p) => s + p.x * p.x, 0);
  const sxy = points.reduce((s, p) => s + p.x * p.y, 0);
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

async function main() {
  const runAt = new Date().toISOString();
  const list = cpus();
  const results = {
    runAt,
    config,
    machine: {
      cores: list.length,
      cpu: list[0]?.model ?? "unknown",
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      loadAverage: loadavg().map((v) => Number(v.toFixed(2))),
    },
  };
  log(`${results.machine.cores} cores; load average ${results.machine.loadAverage.join(" ")}`);
  const clickhouse = await startBenchClickHouse();
  let platform;
  let sampler;
  let isolates = [];
  /** Per queue since the last minute: batches and messages delivered to the consumer, messages acked, ms spent. */
  let delivered = {};
  try {
    process.env.BENCH_INSPECTOR_PORT ??= String(await freePort());
    platform = await startPlatform(root, {
      queueConsumers: true,
      onQueueBatch: (b) => {
        delivered[b.queue] ??= { batches: 0, messages: 0, acked: 0, ms: 0 };
        const entry = delivered[b.queue];
        entry.batches++;
        entry.ms += b.ms;
        entry.messages += b.total;
        entry.acked += b.acked;
      },
      bindings: { ...clickhouse.bindings, LOG_LEVEL: "warn" },
    });
    const seed = await seedMix(platform.url, root, {
      capsules: config.capsules,
      accounts: config.accounts,
      projects: config.projects,
      log,
    });
    const pids = workerdPids();
    if (pids.length !== 1)
      log(`note: ${pids.length} workerd processes (${pids.join(", ")}); RSS is their sum`);
    isolates = await inspectIsolates(Number(process.env.BENCH_INSPECTOR_PORT));
    const rss = [];
    const startedAt = performance.now();
    const sample = async () => {
      const mib = pids.reduce((n, pid) => n + rssMiB(pid), 0);
      const point = { seconds: (performance.now() - startedAt) / 1000, mib, load: loadavg()[0] };
      rss.push(point);
      point.heapMiB = await heapUsage(isolates);
      point.heapTotalMiB = Object.values(point.heapMiB).reduce((n, v) => n + v, 0);
    };
    await sample();
    sampler = setInterval(sample, RSS_SAMPLE_MS);
    const minutes = [];
    const runs = [];
    const retained = [];
    const keep = async () => {
      const byIsolate = await retainedHeap(isolates);
      const point = {
        seconds: (performance.now() - startedAt) / 1000,
        byIsolate,
        totalMiB: Object.values(byIsolate).reduce((n, v) => n + v, 0),
      };
      retained.push(point);
      return point;
    };
    await keep();
    const token = platform.secrets.SOMA_ADMIN_TOKEN;
    let lagBefore = await queueLag(platform.url, token);
    delivered = {};
    for (let minute = 1; minute <= config.minutes; minute++) {
      const { byType, overall } = await runMix(platform.url, seed, {
        clients: config.clients,
        seconds: 60,
        label: `soak${minute}`,
      });
      runs.push(overall);
      const kept = await keep();
      const lagNow = await queueLag(platform.url, token);
      // Mean lag of the messages each queue delivered this minute, from the histogram's sum and count.
      const lag = Object.fromEntries(
        Object.entries(lagNow).map(([queue, { sum, count }]) => {
          const n = count - (lagBefore[queue]?.count ?? 0);
          return [queue, n > 0 ? (sum - (lagBefore[queue]?.sum ?? 0)) / n : null];
        }),
      );
      lagBefore = lagNow;
      const deliveredThisMinute = delivered;
      delivered = {};
      const errors = overall.connectionErrors + overall.timeouts + overall.non2xx;
      minutes.push({
        minute,
        requests: overall.requests,
        reqPerSec: overall.reqPerSec,
        ok: overall.ok,
        errors,
        non2xx: overall.non2xx,
        timeouts: overall.timeouts,
        connectionErrors: overall.connectionErrors,
        p50: overall.latency.p50,
        p95: overall.latency.p95,
        p95ByType: Object.fromEntries(MIX.map((m) => [m.type, byType[m.type].latency.p95])),
        rssMiB: rss[rss.length - 1]?.mib,
        heapMiB: rss[rss.length - 1]?.heapTotalMiB,
        retainedHeapMiB: kept.totalMiB,
        meanQueueLagSeconds: lag,
        delivered: deliveredThisMinute,
        loadAverage: loadavg()[0],
      });
      log(
        `minute ${minute}: ${overall.requests} requests, ${errors} errors, p50 ${ms(overall.latency.p50)} ms, p95 ${ms(overall.latency.p95)} ms, workerd RSS ${rss[rss.length - 1]?.mib.toFixed(1)} MiB, JS heaps ${rss[rss.length - 1]?.heapTotalMiB?.toFixed(1)} MiB (retained ${kept.totalMiB.toFixed(1)}), events queue lag ${lag["soma-events"]?.toFixed(2) ?? "-"} s over ${deliveredThisMinute["soma-events"]?.messages ?? 0} messages`,
      );
    }
    clearInterval(sampler);
    // No extra sample at the end: it would come right after the last minute's full collection and pull the
    // slope down; the 10 s samples fall at any moment of the collector's cycle.
    const all = combine(runs);
    const total = all.requests + all.connectionErrors + all.timeouts;
    const availability = total > 0 ? all.ok / total : Number.NaN;
    const { mibPerHour, mean: meanMib, flat } = secondHalfTrend(rss, (p) => p.mib);
    results.availability = {
      requests: total,
      ok: all.ok,
      non2xx: all.non2xx,
      timeouts: all.timeouts,
      connectionErrors: all.connectionErrors,
      share: availability,
      goal: GOAL_AVAILABILITY,
      met: availability >= GOAL_AVAILABILITY,
      statusCodes: all.statusCodes,
    };
    results.latency = { overall: summarize(all.latencies), perMinute: minutes };
    results.rss = {
      samples: rss,
      first: rss[0].mib,
      last: rss[rss.length - 1].mib,
      max: Math.max(...rss.map((p) => p.mib)),
      secondHalfSlopeMiBPerHour: mibPerHour,
      secondHalfMeanMiB: meanMib,
      flat,
      flatRule: `|slope| < ${FLAT_SHARE_PER_HOUR * 100}% of the mean per hour over the second half`,
    };
    const heapTrend = secondHalfTrend(rss, (p) => p.heapTotalMiB);
    const [heapMibPerHour, heapMean] = [heapTrend.mibPerHour, heapTrend.mean];
    const lastHeaps = rss[rss.length - 1].heapMiB ?? {};
    results.heap = {
      first: rss[0].heapTotalMiB,
      last: rss[rss.length - 1].heapTotalMiB,
      secondHalfSlopeMiBPerHour: heapMibPerHour,
      secondHalfMeanMiB: heapMean,
      flat: heapTrend.flat,
      firstByIsolate: rss[0].heapMiB,
      lastByIsolate: lastHeaps,
    };
    const keptTrend = secondHalfTrend(retained, (p) => p.totalMiB);
    const [keptMibPerHour, keptMean] = [keptTrend.mibPerHour, keptTrend.mean];
    const firstKept = retained[0];
    const lastKept = retained[retained.length - 1];
    // Where the retained heap that grew most lives: object groups of that isolate's last snapshot.
    const growth = (name) => lastKept.byIsolate[name] - (firstKept.byIsolate[name] ?? 0);
    const grewMost = Object.keys(lastKept.byIsolate).reduce(
      (best, name) => (best === undefined || growth(name) > growth(best) ? name : best),
      undefined,
    );
    const grewMostSession = isolates.find((s) => s.name === grewMost);
    results.retainedHeap = {
      samples: retained,
      first: firstKept.totalMiB,
      last: lastKept.totalMiB,
      secondHalfSlopeMiBPerHour: keptMibPerHour,
      secondHalfMeanMiB: keptMean,
      flat: keptTrend.flat,
      grewMost: grewMostSession
        ? {
            isolate: grewMost,
            fromMiB: firstKept.byIsolate[grewMost] ?? 0,
            toMiB: lastKept.byIsolate[grewMost],
            largestGroups: snapshotSummary(await heapSnapshot(grewMostSession), 20),
          }
        : undefined,
    };
    results.workerErrors = platform.workerErrors.slice(0, 20);

    console.log("");
    console.log(
      table(
        [
          "minute",
          "requests",
          "req/s",
          "errors",
          "p50 ms",
          "p95 ms",
          "RSS MiB",
          "heaps MiB",
          "retained MiB",
          "load",
        ],
        minutes.map((m) => [
          m.minute,
          m.requests,
          m.reqPerSec.toFixed(0),
          m.errors,
          ms(m.p50),
          ms(m.p95),
          m.rssMiB?.toFixed(1) ?? "-",
          m.heapMiB?.toFixed(1) ?? "-",
          m.retainedHeapMiB.toFixed(1),
          m.loadAverage.toFixed(2),
        ]),
      ),
    );
    console.log("");
    console.log(
      `availability ${(availability * 100).toFixed(3)}% (${all.ok} of ${total}; non-2xx ${all.non2xx}, timeouts ${all.timeouts}, connection errors ${all.connectionErrors}); goal >= ${GOAL_AVAILABILITY * 100}%: ${results.availability.met ? "met" : "NOT met"}`,
    );
    console.log(
      `workerd RSS ${results.rss.first.toFixed(1)} -> ${results.rss.last.toFixed(1)} MiB (max ${results.rss.max.toFixed(1)}); second-half slope ${mibPerHour.toFixed(1)} MiB/h on a mean of ${meanMib.toFixed(1)} MiB: ${flat ? "flat" : "NOT flat"} (${results.rss.flatRule})`,
    );
    const heaps = Object.entries(lastHeaps)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 5)
      .map(([name, mib]) => `${name} ${mib.toFixed(1)} (from ${(rss[0].heapMiB?.[name] ?? 0).toFixed(1)})`)
      .join(", ");
    console.log(
      `JS heaps of all isolates ${results.heap.first?.toFixed(1)} -> ${results.heap.last?.toFixed(1)} MiB; second-half slope ${heapMibPerHour.toFixed(1)} MiB/h on a mean of ${heapMean.toFixed(1)} MiB: ${results.heap.flat ? "flat" : "NOT flat"}; largest: ${heaps}`,
    );
    const grew = results.retainedHeap.grewMost;
    console.log(
      `retained JS heaps (after a full collection) ${results.retainedHeap.first.toFixed(1)} -> ${results.retainedHeap.last.toFixed(1)} MiB; second-half slope ${keptMibPerHour.toFixed(1)} MiB/h on a mean of ${keptMean.toFixed(1)} MiB: ${results.retainedHeap.flat ? "flat" : "NOT flat"}${grew ? `; grew most: ${grew.isolate} ${grew.fromMiB.toFixed(1)} -> ${grew.toMiB.toFixed(1)} MiB` : ""}`,
    );
    const dir = join(root, "bench", "results");
    await mkdir(dir, { recursive: true });
    const file = join(dir, `soak-${runAt.replaceAll(":", "-")}.json`);
    await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
    log(`results in ${file}`);
  } finally {
    clearInterval(sampler);
    for (const isolate of isolates) isolate.close();
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
