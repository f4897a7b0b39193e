/**
 * Chaos check: while KAMACHIQ projects run (explicit 20-task graphs of a worker capsule, with the real agents
 * and the quality gate) and usage events are ingested at a steady rate, the runtime (workerd) is killed with
 * SIGKILL at random moments and restarted on the same persisted state, and ClickHouse is stopped (SIGSTOP) for
 * a while and resumed. Then it checks that
 *   - every project completes;
 *   - no attempt is charged twice (one usage settlement per attempt in each project's timeline);
 *   - each project's budget ledger balances (reserved back to 0, spent = the sum of the settled charges);
 *   - ClickHouse holds every accepted ingested event exactly once (count = distinct ids = accepted), and every
 *     event of the projects' timelines exactly once;
 *   - the platform recovers from each kill within the goal (time until /healthz answers, and until the next
 *     task settles).
 * Exits non-zero when a check fails. The platform runs on the Miniflare API (bench/lib/server.mjs) with a
 * ClickHouse server of its own (bench/lib/clickhouse.mjs), 127.0.0.1 only; stops by itself and writes
 * bench/results/chaos-<time>.json.
 *
 * Environment (defaults in brackets):
 *   CHAOS_PROJECTS         projects [10]
 *   CHAOS_TASKS            tasks per project, a layered graph 10 wide (each task waits for two of the layer
 *                          before), so the projects are still running when the faults come [100]
 *   CHAOS_KILLS            runtime kills [3]
 *   CHAOS_KILL_EVERY       a kill falls at a random moment in each window of this many seconds [25]
 *   CHAOS_CLICKHOUSE_STOP  seconds ClickHouse stays stopped [30]
 *   CHAOS_EVENTS_PER_SECOND usage events ingested per second, in batches of 10 [100]
 *   CHAOS_TIMEOUT          seconds to wait for the projects and for ClickHouse afterwards [600]
 */

import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startBenchClickHouse } from "../bench/lib/clickhouse.mjs";
import {
  layeredGraph,
  publishReviewer,
  publishWorker,
  signUpOne,
  WORKER_SOURCE,
} from "../bench/lib/kamachiq.mjs";
import { workerdPids } from "../bench/lib/proc.mjs";
import { startPlatform } from "../bench/lib/server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const int = (name, fallback, min = 1) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}`);
  return value;
};
const config = {
  projects: int("CHAOS_PROJECTS", 10),
  tasks: int("CHAOS_TASKS", 100),
  kills: int("CHAOS_KILLS", 3, 0),
  killEvery: int("CHAOS_KILL_EVERY", 20, 5),
  clickhouseStop: int("CHAOS_CLICKHOUSE_STOP", 30, 0),
  eventsPerSecond: int("CHAOS_EVENTS_PER_SECOND", 100),
  timeout: int("CHAOS_TIMEOUT", 600),
};
const BATCH = 10;
const GOAL_RECOVERY_S = 30;
const TERMINAL = new Set(["completed", "failed", "cancelled", "budget_exhausted"]);
const log = (message) => console.log(`[chaos] ${new Date().toISOString().slice(11, 19)} ${message}`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

async function api(base, path, { token, json, timeoutMs = 10_000 } = {}) {
  try {
    const response = await fetch(`${base}${path}`, {
      method: json === undefined ? "GET" : "POST",
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(json !== undefined ? { "content-type": "application/json" } : {}),
      },
      body: json === undefined ? undefined : JSON.stringify(json),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { raw: text.slice(0, 300) };
    }
    return { status: response.status, body };
  } catch (error) {
    return { status: 0, body: { error: String(error) } };
  }
}

/** Ingests usage events at a steady rate; a batch is resent with the same ids until it is answered 202. */
function ingester(ctx, account) {
  const accepted = new Set();
  let stop = false;
  let seq = 0;
  let failures = 0;
  let duplicatesReported = 0;
  const intervalMs = (1000 * BATCH) / config.eventsPerSecond;
  const done = (async () => {
    let next = performance.now();
    while (!stop) {
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
      next += intervalMs;
      const time = new Date().toISOString();
      const events = Array.from({ length: BATCH }, () => ({
        specversion: "1.0",
        id: `chaos-${seq++}`,
        source: "bench://chaos",
        type: "soma.usage.tokens",
        time,
        data: { inputTokens: 100, outputTokens: 20 },
      }));
      for (;;) {
        const res = await api(ctx.base, "/v1/events", {
          token: account.apiKey,
          json: events,
          timeoutMs: 5000,
        });
        if (res.status === 202) {
          for (const e of events) accepted.add(e.id);
          duplicatesReported += res.body?.duplicates ?? 0;
          break;
        }
        failures++;
        await sleep(250);
      }
    }
  })();
  return {
    accepted,
    stats: () => ({ sent: seq, accepted: accepted.size, failedRequests: failures, duplicatesReported }),
    async stop() {
      stop = true;
      await done;
    },
  };
}

/** The first settlement (usage.tokens in a timeline) after `since` (epoch ms), polled every 500 ms. */
async function nextSettlement(ctx, projects, since, deadline) {
  while (Date.now() < deadline) {
    for (const p of projects) {
      const res = await api(ctx.base, `/v1/projects/${p.id}/report`, { token: p.apiKey });
      const at = (res.body?.report?.timeline ?? [])
        .filter((e) => e.type === "usage.tokens" && Date.parse(e.at) > since)
        .map((e) => Date.parse(e.at));
      if (at.length > 0) return Math.min(...at);
    }
    if (projects.every((p) => TERMINAL.has(p.status))) return null;
    await sleep(500);
  }
  return null;
}

async function main() {
  const runAt = new Date().toISOString();
  const results = { runAt, config, loadAverage: [loadavg()[0]], kills: [], checks: [] };
  log(
    `load average ${loadavg()
      .map((v) => v.toFixed(2))
      .join(" ")}`,
  );
  const clickhouse = await startBenchClickHouse();
  const port = await freePort();
  const options = {
    queueConsumers: true,
    port,
    bindings: {
      ...clickhouse.bindings,
      LOG_LEVEL: "warn",
      // An attempt whose agent died with the runtime is given again after this lease (production: 10 min).
      KAMACHIQ_LEASE_MS: "15000",
      KAMACHIQ_RETRY_BASE_MS: "500",
    },
  };
  let platform;
  let clickhouseStopped = false;
  let events;
  const ctx = { base: `http://127.0.0.1:${port}` };
  try {
    platform = await startPlatform(root, options);
    log(`Miniflare at ${platform.url}, ClickHouse at ${clickhouse.url} (pid ${clickhouse.pid})`);
    await publishReviewer(ctx.base, root);
    const publisher = await signUpOne(ctx.base, "chaos-publisher", "198.51.100.2");
    await publishWorker(ctx.base, publisher.apiKey, "chaos-publisher/pyfile", WORKER_SOURCE);
    const ingestAccount = await signUpOne(ctx.base, "chaos-ingest", "198.51.100.3");
    const projects = [];
    for (let i = 0; i < config.projects; i++) {
      const owner = await signUpOne(ctx.base, `chaos-owner-${i}`, `198.51.100.${10 + i}`);
      const res = await api(ctx.base, "/v1/projects", {
        token: owner.apiKey,
        json: {
          name: `chaos-${i}`,
          spec: { tasks: layeredGraph(config.tasks, ["chaos-publisher/pyfile@^1"], 10) },
          budget: { tokens: 10_000_000 },
          maxParallelAgents: 1,
        },
      });
      if (res.status !== 201) throw new Error(`project ${i}: ${res.status} ${JSON.stringify(res.body)}`);
      projects.push({ id: res.body.project.id, apiKey: owner.apiKey, status: "running" });
    }
    log(
      `${projects.length} projects of ${config.tasks} tasks created; ingesting ${config.eventsPerSecond} events/s`,
    );
    events = ingester(ctx, ingestAccount);
    const chaosStarted = Date.now();
    // The platform's minute cron, which Miniflare does not run by itself: it sends again what a killed
    // runtime's in-memory queue lost (outbox rows and spooled ingestion messages not confirmed stored).
    let cronTicks = 0;
    const cron = setInterval(() => {
      platform.mf
        .getWorker()
        .then((worker) => worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() }))
        .then(() => cronTicks++)
        .catch(() => {}); // the runtime is down for a moment after a kill; the next tick runs
    }, 60_000);
    cron.unref();

    // ClickHouse goes away for a while, at a random moment in the first kill windows.
    const stopAt = 5_000 + Math.random() * config.killEvery * 1000;
    const clickhouseOutage = (async () => {
      if (config.clickhouseStop === 0) return null;
      await sleep(stopAt);
      process.kill(clickhouse.pid, "SIGSTOP");
      clickhouseStopped = true;
      const stoppedAt = Date.now();
      log(`ClickHouse stopped (SIGSTOP) for ${config.clickhouseStop} s`);
      await sleep(config.clickhouseStop * 1000);
      process.kill(clickhouse.pid, "SIGCONT");
      clickhouseStopped = false;
      log("ClickHouse resumed (SIGCONT)");
      return { stoppedAtSeconds: (stoppedAt - chaosStarted) / 1000, seconds: config.clickhouseStop };
    })();

    for (let k = 0; k < config.kills; k++) {
      const windowStart = chaosStarted + k * config.killEvery * 1000;
      const at = windowStart + 3000 + Math.random() * (config.killEvery - 3) * 1000;
      await sleep(Math.max(0, at - Date.now()));
      for (const p of projects) {
        const res = await api(ctx.base, `/v1/projects/${p.id}`, { token: p.apiKey });
        if (res.status === 200) p.status = res.body.project?.status ?? res.body.status ?? p.status;
      }
      const running = projects.filter((p) => !TERMINAL.has(p.status)).length;
      const pids = workerdPids();
      const killedAt = Date.now();
      for (const pid of pids) process.kill(pid, "SIGKILL");
      log(`kill ${k + 1}: SIGKILL workerd ${pids.join(", ")} with ${running} projects running`);
      await Promise.race([platform.dispose().catch(() => {}), sleep(10_000)]);
      platform = await startPlatform(root, { ...options, restartFrom: platform.persisted });
      const restartedAt = Date.now();
      let healthAt = null;
      while (Date.now() - killedAt < 120_000) {
        const res = await api(ctx.base, "/healthz", { timeoutMs: 2000 });
        if (res.status === 200) {
          healthAt = Date.now();
          break;
        }
        await sleep(100);
      }
      const settledAt = await nextSettlement(ctx, projects, killedAt, killedAt + 180_000);
      const kill = {
        n: k + 1,
        atSeconds: (killedAt - chaosStarted) / 1000,
        projectsRunning: running,
        restartSeconds: (restartedAt - killedAt) / 1000,
        healthzSeconds: healthAt ? (healthAt - killedAt) / 1000 : null,
        nextSettleSeconds: settledAt ? (settledAt - killedAt) / 1000 : null,
      };
      results.kills.push(kill);
      log(
        `kill ${kill.n}: runtime back in ${kill.restartSeconds.toFixed(1)} s, /healthz after ${kill.healthzSeconds?.toFixed(1) ?? "never"} s, next task settled after ${kill.nextSettleSeconds?.toFixed(1) ?? "none (no project left running)"} s`,
      );
    }
    results.clickhouseOutage = await clickhouseOutage;

    // Let the ingestion run a little past the last fault, then wait for the projects.
    await sleep(5000);
    await events.stop();
    results.ingestion = events.stats();
    log(`ingestion stopped: ${JSON.stringify(results.ingestion)}`);
    const deadline = Date.now() + config.timeout * 1000;
    let lastLog = 0;
    while (Date.now() < deadline) {
      for (const p of projects) {
        const res = await api(ctx.base, `/v1/projects/${p.id}`, { token: p.apiKey });
        if (res.status === 200) p.status = res.body.project?.status ?? res.body.status ?? p.status;
      }
      const open = projects.filter((p) => !TERMINAL.has(p.status)).length;
      if (open === 0) break;
      if (Date.now() - lastLog > 15_000) {
        lastLog = Date.now();
        log(`${projects.length - open}/${projects.length} projects finished`);
      }
      await sleep(2000);
    }

    // Checks.
    const check = (name, ok, detail) => {
      results.checks.push({ name, ok, detail });
      log(`${ok ? "PASS" : "FAIL"} ${name}: ${detail}`);
    };
    const reports = [];
    for (const p of projects) {
      const res = await api(ctx.base, `/v1/projects/${p.id}/report`, { token: p.apiKey });
      if (res.status !== 200) throw new Error(`report ${p.id}: ${res.status} ${JSON.stringify(res.body)}`);
      reports.push(res.body.report);
    }
    const statuses = reports.map((r) => r.project.status);
    check(
      "every project completes",
      statuses.every((s) => s === "completed"),
      `${statuses.filter((s) => s === "completed").length}/${reports.length} completed (${[...new Set(statuses)].join(", ")})`,
    );
    const perTask = [];
    let doubleCharged = 0;
    let unbalanced = 0;
    let reservedLeft = 0;
    for (const report of reports) {
      const settlements = report.timeline.filter((e) => e.type === "usage.tokens");
      const byAttempt = new Map();
      for (const e of settlements)
        byAttempt.set(e.data.attemptId, (byAttempt.get(e.data.attemptId) ?? 0) + 1);
      doubleCharged += [...byAttempt.values()].filter((n) => n > 1).length;
      const charged = settlements.reduce((n, e) => n + Number(e.data.chargedTokens ?? 0), 0);
      if (charged !== report.budget.spentTokens) unbalanced++;
      reservedLeft += report.budget.reservedTokens;
      for (const task of report.tasks) {
        const taskSettlements = settlements.filter((e) => e.taskId === task.id);
        perTask.push({
          project: report.project.id,
          task: task.id,
          attempts: task.attemptsDetail.length,
          settlements: taskSettlements.length,
          chargedTokens: taskSettlements.reduce((n, e) => n + Number(e.data.chargedTokens ?? 0), 0),
        });
      }
    }
    results.perTask = perTask;
    const retried = perTask.filter((t) => t.attempts > 1);
    check(
      "no attempt is charged twice",
      doubleCharged === 0 && perTask.every((t) => t.settlements <= t.attempts),
      `${perTask.length} tasks, ${perTask.reduce((n, t) => n + t.attempts, 0)} attempts, ${perTask.reduce((n, t) => n + t.settlements, 0)} settlements; ${retried.length} tasks ran more than once; ${doubleCharged} attempts settled twice`,
    );
    check(
      "budget ledger balances",
      unbalanced === 0 && reservedLeft === 0,
      `reserved left ${reservedLeft} tokens; ${unbalanced} projects whose spent differs from the sum of settled charges; spent ${reports.reduce((n, r) => n + r.budget.spentTokens, 0)} tokens in all`,
    );

    // ClickHouse: the ingested events and the projects' timelines, each exactly once.
    const accepted = events.accepted.size;
    const projectEvents = reports.reduce((n, r) => n + r.timeline.length, 0);
    const ids = reports.map((r) => `'${r.project.id}'`).join(",");
    const count = async () => {
      const [ingested] = await clickhouse.rows(
        `SELECT count() AS n, uniqExact(id) AS d FROM events WHERE id LIKE 'acct:${ingestAccount.id}:chaos-%'`,
      );
      const [timeline] = await clickhouse.rows(
        `SELECT count() AS n, uniqExact(id) AS d FROM events WHERE project_id IN (${ids})`,
      );
      return {
        ingested: { stored: Number(ingested.n), distinct: Number(ingested.d) },
        timeline: { stored: Number(timeline.n), distinct: Number(timeline.d) },
      };
    };
    let stored = await count();
    // A message the queue lost when the runtime died is sent again once it is 2 minutes old, at the next
    // cron tick (spool and outbox) or by its coordinator's alarm (30 s): allow for that.
    const chDeadline = Date.now() + Math.max(240, Math.min(config.timeout, 600)) * 1000;
    while (
      Date.now() < chDeadline &&
      (stored.ingested.distinct < accepted || stored.timeline.distinct < projectEvents)
    ) {
      await sleep(2000);
      stored = await count();
      log(
        `ClickHouse: ${JSON.stringify(stored)} of ${accepted} ingested and ${projectEvents} project events`,
      );
    }
    // Messages the events consumer gave up on are parked in D1 (replayable), not lost: count them apart.
    const parked = await platform.db
      .prepare("SELECT queue, count(*) AS n FROM dead_letters GROUP BY queue")
      .all()
      .then((r) => Object.fromEntries(r.results.map((row) => [row.queue, Number(row.n)])))
      .catch((error) => ({ error: String(error) }));
    log(`dead letters parked in D1 by queue: ${JSON.stringify(parked)}`);
    clearInterval(cron);
    results.clickhouse = { accepted, projectEvents, ...stored, deadLetters: parked, cronTicks };
    check(
      "ClickHouse holds every accepted event once",
      stored.ingested.stored === accepted && stored.ingested.distinct === accepted,
      `accepted ${accepted}, stored ${stored.ingested.stored}, distinct ${stored.ingested.distinct}`,
    );
    check(
      "ClickHouse holds every project event once",
      stored.timeline.stored === projectEvents && stored.timeline.distinct === projectEvents,
      `timelines ${projectEvents}, stored ${stored.timeline.stored}, distinct ${stored.timeline.distinct}`,
    );
    const slow = results.kills.filter(
      (k) =>
        k.healthzSeconds === null ||
        k.healthzSeconds > GOAL_RECOVERY_S ||
        (k.nextSettleSeconds !== null && k.nextSettleSeconds > GOAL_RECOVERY_S),
    );
    check(
      `recovery under ${GOAL_RECOVERY_S} s`,
      slow.length === 0,
      results.kills
        .map(
          (k) =>
            `kill ${k.n}: /healthz ${k.healthzSeconds?.toFixed(1) ?? "never"} s, next settle ${k.nextSettleSeconds?.toFixed(1) ?? "-"} s`,
        )
        .join("; "),
    );
    results.loadAverage.push(loadavg()[0]);
    results.workerErrors = platform.workerErrors.slice(0, 20);
    const dir = join(root, "bench", "results");
    await mkdir(dir, { recursive: true });
    const file = join(dir, `chaos-${runAt.replaceAll(":", "-")}.json`);
    await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
    const failed = results.checks.filter((c) => !c.ok);
    log(
      `${results.checks.length - failed.length}/${results.checks.length} checks passed; results in ${file}`,
    );
    return failed.length === 0;
  } finally {
    await events?.stop().catch(() => {});
    if (clickhouseStopped) process.kill(clickhouse.pid, "SIGCONT");
    await platform?.stop().catch(() => {});
    await clickhouse.stop();
  }
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
