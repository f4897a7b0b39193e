/**
 * Analytics ingestion benchmark: `soma.usage.tokens` CloudEvents end to end through POST /v1/events -> the
 * events queue -> the events consumer -> ClickHouse, beside direct inserts of the same rows into the same
 * ClickHouse server with @clickhouse/client-web in the same run. Two end-to-end phases:
 *   - paced: the clients together offer a fixed rate (the 10,000 events/s design target and the 20,000 goal), which
 *     gives the visibility lag when the pipeline keeps up;
 *   - saturating: the clients send as fast as the API answers, which gives the highest accepted and stored
 *     rates (and the lag when the consumer falls behind).
 * Each phase reports accepted events/s (HTTP side), stored events/s (first send to the last row visible),
 * visibility lag p50/p95 of marker events (POST answered 202 -> row visible) and whether every accepted
 * event was stored exactly once. The baseline then inserts the same rows straight into a second database with
 * the same schema (JSONEachRow, 10,000-row batches), plain and with the consumer's exactly-once id check.
 *
 * The Worker runs on the Miniflare API (one workerd, no dev proxy) with its queue consumers, against a
 * ClickHouse server of the run's own (Debian's 18.16), 127.0.0.1 only. Stops by itself; prints tables and
 * writes bench/results/ingestion-<time>.json.
 *
 * Environment (defaults in brackets):
 *   BENCH_SECONDS            how long the clients send in the saturating phase [60]
 *   BENCH_PACED_RATES        offered events/s of the paced phases, comma-separated; empty for none [10000,20000]
 *   BENCH_PACED_SECONDS      how long each paced phase sends [30]
 *   BENCH_CLIENTS            concurrent clients, one account each [8]
 *   BENCH_BATCH              events per POST (the API takes at most 1000) [1000]
 *   BENCH_MAX_EVENTS         a phase stops early after this many events [5000000]
 *   BENCH_MARKERS_PER_SECOND marker events whose visibility is timed [5]
 *   BENCH_DRAIN_SECONDS      how long a phase waits for ClickHouse to hold every accepted event [300]
 *   BENCH_DIRECT_ROWS        rows for the direct-insert baseline [the events accepted, at most 2,000,000]
 *   BENCH_EVENTS_SPOOL       the Worker's EVENTS_SPOOL: off as in staging and production, where Cloudflare
 *                            Queues persist messages, or r2 as `npm start` runs (one R2 write per message) [off]
 */

import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@clickhouse/client-web";
import { migrate } from "../scripts/clickhouse-migrate.mjs";
import { startBenchClickHouse } from "./lib/clickhouse.mjs";
import { signUpOne } from "./lib/kamachiq.mjs";
import { sequential } from "./lib/load.mjs";
import { cpuDelta, cpuSample, workerdPids } from "./lib/proc.mjs";
import { machine, versions } from "./lib/run-info.mjs";
import { startPlatform } from "./lib/server.mjs";
import { ms, summarize, table } from "./lib/stats.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const int = (name, fallback, min = 1) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}`);
  return value;
};
const config = {
  seconds: int("BENCH_SECONDS", 60),
  pacedRates: (process.env.BENCH_PACED_RATES ?? "10000,20000")
    .split(",")
    .filter((v) => v.trim() !== "")
    .map((v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error("BENCH_PACED_RATES lists positive integers");
      return n;
    }),
  pacedSeconds: int("BENCH_PACED_SECONDS", 30),
  clients: int("BENCH_CLIENTS", 8),
  batch: int("BENCH_BATCH", 1000),
  maxEvents: int("BENCH_MAX_EVENTS", 5_000_000),
  markersPerSecond: int("BENCH_MARKERS_PER_SECOND", 5),
  drainSeconds: int("BENCH_DRAIN_SECONDS", 300),
  directRows: process.env.BENCH_DIRECT_ROWS ? int("BENCH_DIRECT_ROWS", 1) : null,
  spool: process.env.BENCH_EVENTS_SPOOL ?? "off",
};
if (!["off", "r2"].includes(config.spool)) throw new Error("BENCH_EVENTS_SPOOL is off or r2");
if (config.batch > 1000) throw new Error("BENCH_BATCH is at most 1000 (the API's limit)");
const GOAL_EVENTS_PER_SECOND = 20_000;
const DESIGN_EVENTS_PER_SECOND = 10_000;
const GOAL_LAG_P95_MS = 2000;
const MARKER_POLL_MS = 100;
/** The drain check counts the whole table (cheap); it runs once a second so the bench adds little load. */
const DRAIN_POLL_MS = 1000;
const DIRECT_BATCH = 10_000;
const DIRECT_DATABASE = "bench_direct";
const DIRECT_MAX_ROWS = 2_000_000;
const REQUEST_RETRIES = 3;

const log = (message) => console.log(`[bench] ${message}`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** `YYYY-MM-DD hh:mm:ss` in UTC, as the consumer writes DateTime columns. */
const dateTimeText = (date) => date.toISOString().slice(0, 19).replace("T", " ");

/** One usage event as an integration sends it. */
function usageEvent(id, time, i) {
  return {
    specversion: "1.0",
    id,
    source: "bench://ingestion",
    type: "soma.usage.tokens",
    time,
    data: { inputTokens: 100 + (i % 900), outputTokens: 20 + (i % 300) },
  };
}

/**
 * One client: POSTs batches of events for its account until the deadline or the phase's event cap, marking
 * some events so their visibility can be timed. With `intervalMs` it starts one POST every interval (later
 * when a POST takes longer); without, back to back.
 */
async function client(base, account, index, state, intervalMs) {
  const latencies = [];
  let sent = 0;
  let accepted = 0;
  let duplicates = 0;
  let failures = 0;
  let lastFailure = null;
  let seq = 0;
  const markerEveryMs = (1000 * config.clients) / config.markersPerSecond;
  let nextMarkerAt = performance.now() + (markerEveryMs * index) / config.clients;
  // Paced clients start spread over one interval.
  let nextSendAt = performance.now() + (intervalMs ? (intervalMs * index) / config.clients : 0);
  while (performance.now() < state.deadline && state.claimed < config.maxEvents) {
    if (intervalMs) {
      const wait = nextSendAt - performance.now();
      if (wait > 0) await sleep(wait);
      nextSendAt += intervalMs;
      if (performance.now() >= state.deadline) break;
    }
    const size = Math.min(config.batch, config.maxEvents - state.claimed);
    state.claimed += size;
    const time = new Date().toISOString();
    const events = [];
    for (let i = 0; i < size; i++) events.push(usageEvent(`${state.label}-c${index}-${seq++}`, time, seq));
    const body = JSON.stringify(events);
    const marker = performance.now() >= nextMarkerAt ? events[0].id : null;
    if (marker) nextMarkerAt += markerEveryMs;
    let ok = false;
    for (let attempt = 0; attempt < REQUEST_RETRIES && !ok; attempt++) {
      const sentAt = Date.now();
      const started = performance.now();
      let status = 0;
      let text = "";
      try {
        const response = await fetch(`${base}/v1/events`, {
          method: "POST",
          headers: { authorization: `Bearer ${account.apiKey}`, "content-type": "application/json" },
          body,
        });
        status = response.status;
        text = await response.text();
      } catch (error) {
        text = String(error);
      }
      latencies.push(performance.now() - started);
      if (status === 202) {
        const result = JSON.parse(text);
        accepted += result.accepted;
        duplicates += result.duplicates;
        ok = true;
        if (state.firstSendAt === null || sentAt < state.firstSendAt) state.firstSendAt = sentAt;
        state.lastAcceptedAt = Math.max(state.lastAcceptedAt, Date.now());
        if (marker) {
          state.markers.set(`acct:${account.id}:${marker}`, {
            sentAt,
            acceptedAt: Date.now(),
            visibleAt: null,
          });
        }
      } else {
        failures++;
        lastFailure = `${status} ${text.slice(0, 300)}`;
        await sleep(200);
      }
    }
    sent += size;
  }
  return { sent, accepted, duplicates, failures, lastFailure, latencies };
}

/** Polls ClickHouse for the marker ids not yet seen; a marker is visible at the start of the poll that found it. */
function markerPoller(clickhouse, state) {
  let stop = false;
  const done = (async () => {
    let polls = 0;
    while (!stop) {
      const pending = [...state.markers.entries()].filter(([, m]) => m.visibleAt === null).map(([id]) => id);
      if (pending.length > 0) {
        const at = Date.now();
        const list = pending.map((id) => `'${id.replaceAll("'", "")}'`).join(",");
        try {
          for (const row of await clickhouse.rows(`SELECT id FROM events WHERE id IN (${list})`)) {
            const marker = state.markers.get(row.id);
            if (marker && marker.visibleAt === null) marker.visibleAt = at;
          }
        } catch (error) {
          state.pollErrors.push(String(error).slice(0, 200));
        }
        polls++;
      }
      await sleep(MARKER_POLL_MS);
    }
    return polls;
  })();
  return {
    async stop() {
      stop = true;
      return done;
    },
  };
}

async function tableCount(clickhouse) {
  const [row] = await clickhouse.rows("SELECT count() AS n FROM events");
  return Number(row.n);
}

/**
 * One end-to-end phase: the clients send for `seconds` (at `rate` events/s in total, or as fast as they can),
 * then the phase waits until ClickHouse holds every accepted event. The table holds nothing else meanwhile
 * (earlier phases are drained), so rows stored in the phase = table count now - table count before.
 */
async function runPhase(ctx, { label, seconds, rate }) {
  const { platform, clickhouse, accounts, pids, batches } = ctx;
  const intervalMs = rate ? (1000 * config.batch * config.clients) / rate : null;
  const state = {
    label,
    deadline: performance.now() + seconds * 1000,
    claimed: 0,
    firstSendAt: null,
    lastAcceptedAt: 0,
    markers: new Map(),
    pollErrors: [],
  };
  const countBefore = await tableCount(clickhouse);
  const cpuPids = [...pids, clickhouse.pid];
  const before = cpuSample(cpuPids, pids);
  const load = [loadavg()[0]];
  const poller = markerPoller(clickhouse, state);
  const sendStarted = Date.now();
  const progress = setInterval(() => {
    log(
      `${label}: ${state.claimed} events claimed after ${((Date.now() - sendStarted) / 1000).toFixed(0)} s`,
    );
  }, 15_000);
  const clients = await Promise.all(
    accounts.map((account, i) => client(platform.url, account, i, state, intervalMs)),
  );
  clearInterval(progress);
  const sendEnded = Date.now();
  const sent = clients.reduce((n, c) => n + c.sent, 0);
  const accepted = clients.reduce((n, c) => n + c.accepted, 0);
  log(
    `${label}: sent ${sent} events in ${((sendEnded - sendStarted) / 1000).toFixed(1)} s, ${accepted} accepted; waiting for ClickHouse`,
  );

  let stored = (await tableCount(clickhouse)) - countBefore;
  let storedAllAt = null;
  const drainDeadline = Date.now() + config.drainSeconds * 1000;
  let lastLog = Date.now();
  while (Date.now() < drainDeadline) {
    const at = Date.now();
    stored = (await tableCount(clickhouse)) - countBefore;
    if (stored >= accepted) {
      storedAllAt = at;
      break;
    }
    if (Date.now() - lastLog > 15_000) {
      lastLog = Date.now();
      log(`${label}: draining, ${stored}/${accepted} stored`);
    }
    await sleep(DRAIN_POLL_MS);
  }
  const after = cpuSample(cpuPids, pids);
  load.push(loadavg()[0]);
  await sleep(500);
  const polls = await poller.stop();
  // A late duplicate would show after the count first matched: count once more.
  await sleep(2000);
  const finalStored = (await tableCount(clickhouse)) - countBefore;

  const markers = [...state.markers.values()];
  const seen = markers.filter((m) => m.visibleAt !== null);
  const consumerBatches = batches.filter(
    (b) => b.queue === "soma-events" && b.at >= sendStarted && b.at <= (storedAllAt ?? Date.now()) + 1000,
  );
  const batchMs = consumerBatches.reduce((n, b) => n + b.ms, 0);
  const cpu = cpuDelta(before, after);
  const workerdSeconds = pids.reduce((n, pid) => n + (cpu.perProcess[pid] ?? 0), 0);
  const storedSeconds = storedAllAt ? (storedAllAt - state.firstSendAt) / 1000 : null;
  const acceptSeconds = (state.lastAcceptedAt - state.firstSendAt) / 1000;
  const phase = {
    label,
    offeredRate: rate ?? null,
    clients: config.clients,
    batch: config.batch,
    sendSeconds: (sendEnded - sendStarted) / 1000,
    sent,
    accepted,
    duplicatesReported: clients.reduce((n, c) => n + c.duplicates, 0),
    requestFailures: clients.reduce((n, c) => n + c.failures, 0),
    lastRequestFailure: clients.map((c) => c.lastFailure).find(Boolean) ?? null,
    request: summarize(clients.flatMap((c) => c.latencies)),
    acceptedPerSecond: accepted / acceptSeconds,
    storedPerSecond: storedSeconds ? accepted / storedSeconds : null,
    storedSeconds,
    drainSecondsAfterLastAccept: storedAllAt ? (storedAllAt - state.lastAcceptedAt) / 1000 : null,
    stored: finalStored,
    lagFromAccepted: summarize(seen.map((m) => m.visibleAt - m.acceptedAt)),
    lagFromSent: summarize(seen.map((m) => m.visibleAt - m.sentAt)),
    markers: {
      total: markers.length,
      seen: seen.length,
      polls,
      pollMs: MARKER_POLL_MS,
      pollErrors: state.pollErrors.slice(0, 3),
      // Lag over the phase: [seconds after the first send, ms from 202 to visible].
      series: seen.map((m) => [(m.acceptedAt - state.firstSendAt) / 1000, m.visibleAt - m.acceptedAt]),
    },
    consumer: {
      batches: consumerBatches.length,
      retried: consumerBatches.filter((b) => b.acked < b.total).length,
      messagesPerBatch: summarize(consumerBatches.map((b) => b.total)),
      batchMs: summarize(consumerBatches.map((b) => b.ms)),
      eventsPerSecondWhileBusy: batchMs > 0 ? (accepted * 1000) / batchMs : null,
      busyShare: batchMs / ((storedAllAt ?? Date.now()) - sendStarted),
    },
    cpu: {
      windowSeconds: cpu.wallSeconds,
      workerdSeconds,
      workerdCores: workerdSeconds / cpu.wallSeconds,
      workerdBusiestThreadCores: Math.max(...pids.map((pid) => cpu.busiestThread[pid]?.cores ?? 0)),
      clickhouseSeconds: cpu.perProcess[clickhouse.pid] ?? 0,
      clickhouseCores: (cpu.perProcess[clickhouse.pid] ?? 0) / cpu.wallSeconds,
      benchNodeSeconds: cpu.nodeSeconds,
      workerdMsPer1000Events: (workerdSeconds * 1e6) / accepted,
      clickhouseMsPer1000Events: ((cpu.perProcess[clickhouse.pid] ?? 0) * 1e6) / accepted,
    },
    loadAverage: load,
  };
  log(
    `${label}: ${phase.acceptedPerSecond.toFixed(0)} accepted/s, ${phase.storedPerSecond?.toFixed(0) ?? "-"} stored/s, lag p50 ${ms(phase.lagFromAccepted.p50)} ms p95 ${ms(phase.lagFromAccepted.p95)} ms; stored ${phase.stored}/${phase.accepted}`,
  );
  return phase;
}

/** Rows exactly as the consumer writes them (workers/shared/analytics/events.ts eventRow). */
function directRows(count, accountIds, startIndex) {
  const now = dateTimeText(new Date());
  const rows = [];
  for (let i = startIndex; i < startIndex + count; i++) {
    const accountId = accountIds[i % accountIds.length];
    const data = { inputTokens: 100 + (i % 900), outputTokens: 20 + (i % 300), accountId };
    rows.push({
      id: `acct:${accountId}:d${i}`,
      type: "soma.usage.tokens",
      source: "bench://ingestion",
      subject: "",
      time: now,
      account_id: accountId,
      project_id: "",
      capsule: "",
      model: "",
      status: "success",
      input_tokens: data.inputTokens,
      output_tokens: data.outputTokens,
      amount_micro_usd: 0,
      data: JSON.stringify(data),
      ingested_at: now,
    });
  }
  return rows;
}

/**
 * Direct inserts of `total` rows in 10,000-row JSONEachRow batches, one client, one insert at a time, into
 * `events` of the bench's own database (same schema and materialized view as the platform's). With `dedupe`,
 * each batch first looks up its ids as the consumer does (SELECT DISTINCT id ... IN, 2,000 ids a query).
 */
async function directInsert(client, total, accountIds, { dedupe, offset }) {
  const latencies = [];
  const started = performance.now();
  for (let done = 0; done < total; done += DIRECT_BATCH) {
    const rows = directRows(Math.min(DIRECT_BATCH, total - done), accountIds, offset + done);
    const t0 = performance.now();
    if (dedupe) {
      for (let i = 0; i < rows.length; i += 2000) {
        const ids = rows
          .slice(i, i + 2000)
          .map((r) => `'${r.id}'`)
          .join(",");
        const result = await client.query({
          query: `SELECT DISTINCT id FROM events WHERE id IN (${ids})`,
          format: "JSONEachRow",
        });
        await result.json();
      }
    }
    await client.insert({ table: "events", values: rows, format: "JSONEachRow" });
    latencies.push(performance.now() - t0);
  }
  const seconds = (performance.now() - started) / 1000;
  return { rows: total, seconds, rowsPerSecond: total / seconds, batch: summarize(latencies) };
}

async function main() {
  const benchStarted = performance.now();
  const runAt = new Date().toISOString();
  const results = {
    runAt,
    config,
    machine: machine(),
    versions: await versions(root, ["@clickhouse/client-web"]),
  };
  log(
    `${results.machine.cores} cores, ${results.machine.cpu}; node ${process.versions.node}; load average ${results.machine.loadAverage.join(" ")}`,
  );

  const clickhouse = await startBenchClickHouse();
  log(`ClickHouse ${clickhouse.url} (pid ${clickhouse.pid}), migrations ${clickhouse.migrations.join(", ")}`);
  try {
    const batches = [];
    const platform = await startPlatform(root, {
      queueConsumers: true,
      bindings: { ...clickhouse.bindings, EVENTS_SPOOL: config.spool },
      onQueueBatch: (batch) => batches.push(batch),
    });
    const pids = workerdPids();
    log(`platform at ${platform.url} (workerd ${pids.join(", ")}), built in ${ms(platform.buildMs)} ms`);
    try {
      const accounts = [];
      for (let i = 0; i < config.clients; i++) {
        accounts.push(await signUpOne(platform.url, `bench-ingest-${i}`, `198.51.100.${20 + i}`));
      }
      results.baseline = { healthz: await sequential(30, () => fetch(`${platform.url}/healthz`)) };
      // Warm-up: one small POST per account, outside the measurement (isolate, rate limiter, ClickHouse client).
      for (const account of accounts) {
        await fetch(`${platform.url}/v1/events`, {
          method: "POST",
          headers: { authorization: `Bearer ${account.apiKey}`, "content-type": "application/json" },
          body: JSON.stringify([usageEvent("warmup", new Date().toISOString(), 0)]),
        });
      }
      const warmupDeadline = Date.now() + 30_000;
      while ((await tableCount(clickhouse)) < accounts.length && Date.now() < warmupDeadline)
        await sleep(250);

      const ctx = { platform, clickhouse, accounts, pids, batches };
      results.phases = [];
      for (const rate of config.pacedRates) {
        results.phases.push(
          await runPhase(ctx, { label: `paced${rate}`, seconds: config.pacedSeconds, rate }),
        );
        await sleep(2000);
      }
      if (config.seconds > 0) {
        results.phases.push(
          await runPhase(ctx, { label: "saturating", seconds: config.seconds, rate: null }),
        );
      }
      // Exactly once over the whole run: every accepted event (and the warm-ups) once, no id twice.
      const [all] = await clickhouse.rows("SELECT count() AS n, uniqExact(id) AS d FROM events");
      const acceptedTotal = results.phases.reduce((n, p) => n + p.accepted, 0) + accounts.length;
      results.exactlyOnce = {
        accepted: acceptedTotal,
        stored: Number(all.n),
        distinctIds: Number(all.d),
        duplicatesReported: results.phases.reduce((n, p) => n + p.duplicatesReported, 0),
        ok: Number(all.n) === acceptedTotal && Number(all.d) === Number(all.n),
      };
      results.workerErrors = errorCounts(platform.workerErrors);
    } finally {
      await platform.stop();
    }

    // Baseline: the same rows straight into the same server (platform stopped, so it has the machine).
    await migrate({ url: clickhouse.url, database: DIRECT_DATABASE, log: () => {} });
    const direct = createClient({ url: clickhouse.url, database: DIRECT_DATABASE, request_timeout: 60_000 });
    try {
      const largest = Math.max(...results.phases.map((p) => p.accepted));
      const rows = config.directRows ?? Math.min(DIRECT_MAX_ROWS, Math.max(DIRECT_BATCH, largest));
      const accountIds = Array.from({ length: config.clients }, (_, i) => `direct-account-${i}`);
      const before = cpuSample([clickhouse.pid]);
      results.direct = await directInsert(direct, rows, accountIds, { dedupe: false, offset: 0 });
      results.direct.cpu = {
        clickhouseSeconds: cpuDelta(before, cpuSample([clickhouse.pid])).perProcess[clickhouse.pid],
      };
      log(
        `direct insert: ${rows} rows in ${results.direct.seconds.toFixed(1)} s = ${results.direct.rowsPerSecond.toFixed(0)} rows/s`,
      );
      const before2 = cpuSample([clickhouse.pid]);
      results.directDedupe = await directInsert(direct, rows, accountIds, { dedupe: true, offset: rows });
      results.directDedupe.cpu = {
        clickhouseSeconds: cpuDelta(before2, cpuSample([clickhouse.pid])).perProcess[clickhouse.pid],
      };
      log(`direct insert with the id check: ${results.directDedupe.rowsPerSecond.toFixed(0)} rows/s`);
      const [check] = await clickhouse.rows(
        "SELECT count() AS n, uniqExact(id) AS d FROM events",
        DIRECT_DATABASE,
      );
      results.directStored = { rows: Number(check.n), distinct: Number(check.d) };
    } finally {
      await direct.close();
    }
  } finally {
    await clickhouse.stop();
  }
  results.totalSeconds = (performance.now() - benchStarted) / 1000;
  report(results);
  const dir = join(root, "bench", "results");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `ingestion-${runAt.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  log(`results written to ${file}`);
}

function errorCounts(lines) {
  const counts = {};
  for (const line of lines) {
    let key = line.slice(0, 160);
    try {
      const parsed = JSON.parse(line);
      key = `${parsed.msg ?? key}${parsed.error ? `: ${String(parsed.error).slice(0, 120)}` : ""}`;
    } catch {
      // Plain text.
    }
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

function report(r) {
  const rate = (v) => (v === null || v === undefined ? "-" : v.toFixed(0));
  const goal = (v) => (v ? `${((v / GOAL_EVENTS_PER_SECOND) * 100).toFixed(0)}%` : "-");
  const rows = [];
  for (const p of r.phases) {
    const name = p.offeredRate ? `offered ${p.offeredRate}/s` : "as fast as accepted";
    rows.push([
      `${name}: HTTP accepted (202)`,
      p.accepted,
      (p.accepted / p.acceptedPerSecond).toFixed(1),
      rate(p.acceptedPerSecond),
      goal(p.acceptedPerSecond),
      ms(p.request.p50),
      ms(p.request.p95),
      "-",
    ]);
    rows.push([
      `${name}: end to end (first send -> last row)`,
      p.accepted,
      p.storedSeconds?.toFixed(1) ?? "-",
      rate(p.storedPerSecond),
      goal(p.storedPerSecond),
      ms(p.lagFromAccepted.p50),
      ms(p.lagFromAccepted.p95),
      p.cpu.clickhouseSeconds.toFixed(1),
    ]);
  }
  for (const [name, d] of [
    ["direct insert, 10k JSONEachRow (baseline)", r.direct],
    ["direct insert + the consumer's id check", r.directDedupe],
  ]) {
    rows.push([
      name,
      d.rows,
      d.seconds.toFixed(1),
      rate(d.rowsPerSecond),
      goal(d.rowsPerSecond),
      ms(d.batch.p50),
      ms(d.batch.p95),
      d.cpu.clickhouseSeconds.toFixed(1),
    ]);
  }
  console.log(
    `\nIngestion: ${r.config.clients} clients, POST /v1/events of ${r.config.batch} soma.usage.tokens events; EVENTS_SPOOL ${r.config.spool}; ClickHouse 18.16 on the same 2 cores. Goal ${GOAL_EVENTS_PER_SECOND}/s end to end (design target ${DESIGN_EVENTS_PER_SECOND}/s), lag p95 < ${GOAL_LAG_P95_MS} ms.`,
  );
  console.log(
    "p50/p95 columns: per POST (HTTP rows), visibility lag from 202 to the row in ClickHouse (end-to-end rows), per 10,000-row batch (direct rows).",
  );
  console.log(
    table(["path", "events", "seconds", "events/s", "of goal", "p50 ms", "p95 ms", "ClickHouse CPU s"], rows),
  );
  for (const p of r.phases) {
    const c = p.consumer;
    const thirds = [0, 1, 2].map((k) => {
      const end = p.sendSeconds;
      const part = p.markers.series
        .filter(([t]) => t >= (k * end) / 3 && t < ((k + 1) * end) / 3)
        .map(([, lag]) => lag);
      return `${((k * end) / 3).toFixed(0)}-${(((k + 1) * end) / 3).toFixed(0)} s: ${ms(summarize(part).p50)}`;
    });
    console.log(`\n${p.label}:`);
    console.log(
      `  lag of ${p.markers.seen}/${p.markers.total} markers (polled every ${MARKER_POLL_MS} ms) from 202: p50 ${ms(p.lagFromAccepted.p50)} ms, p95 ${ms(p.lagFromAccepted.p95)} ms, max ${ms(p.lagFromAccepted.max)} ms; from send p95 ${ms(p.lagFromSent.p95)} ms; p50 by when the POST was accepted: ${thirds.join("; ")} ms`,
    );
    console.log(
      `  events consumer: ${c.batches} batches (${c.retried} with retries), p50 ${ms(c.messagesPerBatch.p50)} messages and ${ms(c.batchMs.p50)} ms per batch (p95 ${ms(c.batchMs.p95)} ms); busy ${(c.busyShare * 100).toFixed(0)}% of the phase, ${rate(c.eventsPerSecondWhileBusy)} events/s while busy`,
    );
    console.log(
      `  CPU over ${p.cpu.windowSeconds.toFixed(1)} s: workerd ${p.cpu.workerdSeconds.toFixed(1)} s (${p.cpu.workerdCores.toFixed(2)} cores, busiest thread ${p.cpu.workerdBusiestThreadCores.toFixed(2)}; ${p.cpu.workerdMsPer1000Events.toFixed(1)} ms per 1000 events), ClickHouse ${p.cpu.clickhouseSeconds.toFixed(1)} s (${p.cpu.clickhouseCores.toFixed(2)} cores; ${p.cpu.clickhouseMsPer1000Events.toFixed(1)} ms per 1000 events), bench clients ${p.cpu.benchNodeSeconds.toFixed(1)} s; load ${p.loadAverage.map((v) => v.toFixed(1)).join("/")}`,
    );
    console.log(
      `  stored ${p.stored} of ${p.accepted} accepted; request failures ${p.requestFailures}${p.lastRequestFailure ? ` (last: ${p.lastRequestFailure})` : ""}`,
    );
  }
  const x = r.exactlyOnce;
  console.log(
    `\nExactly once (whole run, warm-ups included): accepted ${x.accepted}, stored ${x.stored}, distinct ids ${x.distinctIds}, duplicates reported by the API ${x.duplicatesReported} -> ${x.ok ? "OK" : "MISMATCH"}`,
  );
  console.log(
    `Direct CPU per 1000 rows in ClickHouse: ${((r.direct.cpu.clickhouseSeconds * 1e6) / r.direct.rows).toFixed(1)} ms plain, ${((r.directDedupe.cpu.clickhouseSeconds * 1e6) / r.directDedupe.rows).toFixed(1)} ms with the id check`,
  );
  console.log(
    `Baseline GET /healthz, one at a time: p50 ${ms(r.baseline.healthz.p50)} ms, p95 ${ms(r.baseline.healthz.p95)} ms`,
  );
  if (Object.keys(r.workerErrors).length) console.log(`Worker errors: ${JSON.stringify(r.workerErrors)}`);
  console.log(`\nWhole bench: ${r.totalSeconds.toFixed(0)} s`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
