/**
 * KAMACHIQ benchmark: many projects at once through the real API, with the real agents (queue consumer,
 * Worker Loader sandboxes, the first-party quality gate) and the analytics consumer writing to a ClickHouse
 * server of the run's own. It reports
 *   - planning time of POST /v1/projects for explicit graphs of 1, 20, 100, 250 and 500 tasks;
 *   - for 50 projects of 20 tasks created at once: time from ready to running (p50/p95), tasks per second
 *     and workerd CPU per task, beside the agent-tasks queue's own delivery latency measured in the same run
 *     (idle and under the load);
 *   - the same 50 projects with the agents replaced by a stand-in that settles at once, which isolates the
 *     coordinator's work (bench/lib/stub-agent.mjs).
 * Runs on the Miniflare API (one workerd, no dev proxy), 127.0.0.1 only, and stops by itself. Prints tables
 * and writes bench/results/kamachiq-<time>.json.
 *
 * Environment (defaults in brackets):
 *   BENCH_PROJECTS           projects created at once [50] (20 tasks each)
 *   BENCH_ACCOUNTS           accounts owning them, round robin [10]
 *   BENCH_PARALLEL           maxParallelAgents of each project [10]
 *   BENCH_PLAN_SIZES         task counts for the planning measurement [1,20,100,250,500]
 *   BENCH_PLAN_SAMPLES       samples per planning size [5]
 *   BENCH_TIMEOUT_SECONDS    a load pass gives up after this long [600]
 *   BENCH_COORDINATOR_ONLY   1 to run the stand-in agent pass, 0 to skip it [1]
 */

import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startBenchClickHouse } from "./lib/clickhouse.mjs";
import {
  layeredGraph,
  publishReviewer,
  publishWorker,
  signUpOne,
  taskTimes,
  twentyTaskGraph,
  WORKER_SOURCE,
} from "./lib/kamachiq.mjs";
import { sequential } from "./lib/load.mjs";
import { cpuDelta, cpuSample, workerdPids } from "./lib/proc.mjs";
import { queueProbe } from "./lib/queue-probe.mjs";
import { machine, versions } from "./lib/run-info.mjs";
import { startPlatform } from "./lib/server.mjs";
import { ms, summarize, table } from "./lib/stats.mjs";
import { stubAgentWorker } from "./lib/stub-agent.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const int = (name, fallback, min = 1) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}`);
  return value;
};
const config = {
  projects: int("BENCH_PROJECTS", 50),
  accounts: int("BENCH_ACCOUNTS", 10),
  parallel: int("BENCH_PARALLEL", 10),
  planSizes: (process.env.BENCH_PLAN_SIZES ?? "1,20,100,250,500").split(",").map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 2000) throw new Error("BENCH_PLAN_SIZES lists 1..2000");
    return n;
  }),
  planSamples: int("BENCH_PLAN_SAMPLES", 5),
  timeoutSeconds: int("BENCH_TIMEOUT_SECONDS", 600),
  coordinatorOnly: int("BENCH_COORDINATOR_ONLY", 1, 0) === 1,
};
const TASKS_PER_PROJECT = 20;
const BUDGET_TOKENS = 100_000_000;
const IDLE_PROBES = 10;
const IDLE_CPU_SECONDS = 5;
/** CPU sampling period, and how often each owner's project list is polled for statuses. */
const SAMPLE_MS = 250;
const POLL_MS = 2000;
/** One queue probe a second during the load: a small share of the consumer's batch slots. */
const PROBE_EVERY_MS = 1000;
const EVENTS_WAIT_SECONDS = 60;
/** Batches delivered by every queue (Miniflare's broker log), for the agent-tasks batch figures. */
const queueBatches = [];
/** [startAttempt ms, settleAttempt ms] per task, logged by the stand-in agent. */
const stubTimings = [];
function collectStubTimings(line) {
  if (!line.message.includes("benchStubTimings")) return;
  try {
    stubTimings.push(...JSON.parse(line.message).benchStubTimings);
  } catch {
    // Not ours.
  }
}
/** Worker error lines by their `msg`, poison probes left out. */
function errorCounts(lines) {
  const counts = {};
  for (const line of lines) {
    let key = line.slice(0, 120);
    try {
      const parsed = JSON.parse(line);
      key = `${parsed.msg ?? key}${parsed.error ? `: ${String(parsed.error).slice(0, 100)}` : ""}`;
    } catch {
      // Plain text.
    }
    if (key.startsWith("poison agent-task message")) continue;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}
const TERMINAL = new Set(["completed", "failed", "cancelled", "budget_exhausted", "awaiting_review"]);

const log = (message) => console.log(`[bench] ${message}`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function api(baseUrl, path, { token, json, method } = {}) {
  const response = await fetch(`${baseUrl}${path}`, {
    method: method ?? (json === undefined ? "GET" : "POST"),
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(json !== undefined ? { "content-type": "application/json" } : {}),
    },
    body: json === undefined ? undefined : JSON.stringify(json),
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { raw: text.slice(0, 300) };
  }
  return { status: response.status, body };
}

/** Accounts and capsules, all through the API: the reviewer under `soma`, the bench's workers, the owners. */
async function setup(platform) {
  const started = performance.now();
  const base = platform.url;
  const soma = await publishReviewer(base, root);
  const publisher = await signUpOne(base, "bench-publisher", "198.51.100.2");
  await publishWorker(base, publisher.apiKey, "bench-publisher/pyfile", WORKER_SOURCE);
  await publishWorker(base, publisher.apiKey, "bench-publisher/pyfile-b", WORKER_SOURCE);
  await publishWorker(base, publisher.apiKey, "bench-publisher/pyfile-read", WORKER_SOURCE, {
    permissions: ["artifacts.read"],
  });
  const owners = [];
  for (let i = 0; i < config.accounts; i++) {
    owners.push(await signUpOne(base, `bench-owner-${i}`, `198.51.100.${10 + i}`));
  }
  return {
    reviewer: soma.capsule,
    capsule: "bench-publisher/pyfile@^1",
    capsules: ["bench-publisher/pyfile@^1", "bench-publisher/pyfile-b@^1"],
    permissionCapsule: "bench-publisher/pyfile-read@^1",
    owners,
    seconds: (performance.now() - started) / 1000,
  };
}

/** workerd CPU over a quiet window: what the platform burns with nothing to do (timers, the queue broker). */
async function idleCpu(pids) {
  const before = cpuSample(pids);
  await sleep(IDLE_CPU_SECONDS * 1000);
  const delta = cpuDelta(before, cpuSample(pids));
  return { ...delta, perSecond: delta.seconds / delta.wallSeconds };
}

/**
 * POST /v1/projects with explicit graphs of each size, one request at a time.
 * Agents paused (no agent-tasks consumer: the first dispatched messages wait in the queue): the request alone.
 * Beside each create, the same graph rejected after graph validation (a cycle through every task) and after
 * pinning (a permission not accepted), which splits the time into validation, pinning and the coordinator's
 * create + first dispatch.
 * Live agents (`live`): the same creates while the consumer runs, each project cancelled once it answered.
 */
async function measurePlanning(platform, setupResult, sizes, { live }) {
  const base = platform.url;
  const owner = setupResult.owners[0];
  const results = [];
  for (const size of sizes) {
    const tasks =
      size === TASKS_PER_PROJECT
        ? twentyTaskGraph(setupResult.capsule)
        : layeredGraph(size, setupResult.capsules);
    const body = {
      name: `plan-${size}`,
      spec: { tasks },
      budget: { tokens: BUDGET_TOKENS },
      maxParallelAgents: config.parallel,
    };
    const bytes = JSON.stringify(body).length;
    const edges = tasks.reduce((n, t) => n + t.dependsOn.length, 0);
    // Rejected after graph validation: task 0 depends on the last task, closing a cycle through the graph.
    const cyclic = structuredClone(tasks);
    cyclic[0].dependsOn = [cyclic[cyclic.length - 1].id];
    // Rejected after pinning: the same graph on a twin capsule that declares artifacts.read, which the
    // project does not accept; every capsule is resolved and pinned, then the permission check refuses.
    const unaccepted = tasks.map((t) => ({
      ...t,
      capsule: t.capsule === setupResult.capsule ? setupResult.permissionCapsule : t.capsule,
    }));
    const creates = [];
    const rejectedCycle = [];
    const rejectedPermission = [];
    let failures = 0;
    let lastFailure = null;
    let createdTasks = null;
    for (let i = 0; i < config.planSamples; i++) {
      let started = performance.now();
      if (live) {
        // With live agents only the full create is of interest (the rejections never reach an agent).
        const res = await api(base, "/v1/projects", { token: owner.apiKey, json: body });
        creates.push(performance.now() - started);
        if (res.status !== 201) {
          failures++;
          lastFailure = `${res.status} ${JSON.stringify(res.body).slice(0, 300)}`;
          continue;
        }
        createdTasks = res.body.project.tasks.length;
        await api(base, `/v1/projects/${res.body.project.id}/cancel`, { token: owner.apiKey, json: {} });
        // Let the cancelled project's first dispatches drain through the agent-tasks consumer.
        await sleep(1500);
        continue;
      }
      const cycle = await api(base, "/v1/projects", {
        token: owner.apiKey,
        json: { ...body, spec: { tasks: cyclic } },
      });
      rejectedCycle.push(performance.now() - started);
      if (cycle.body?.error?.code !== "VALIDATION_FAILED") {
        failures++;
        lastFailure = `cycle: ${cycle.status} ${JSON.stringify(cycle.body).slice(0, 200)}`;
      }
      started = performance.now();
      const refused = await api(base, "/v1/projects", {
        token: owner.apiKey,
        json: { ...body, spec: { tasks: unaccepted } },
      });
      rejectedPermission.push(performance.now() - started);
      if (refused.body?.error?.code !== "PERMISSIONS_NOT_ACCEPTED") {
        failures++;
        lastFailure = `permission: ${refused.status} ${JSON.stringify(refused.body).slice(0, 200)}`;
      }
      started = performance.now();
      const res = await api(base, "/v1/projects", { token: owner.apiKey, json: body });
      creates.push(performance.now() - started);
      if (res.status !== 201) {
        failures++;
        lastFailure = `${res.status} ${JSON.stringify(res.body).slice(0, 300)}`;
        continue;
      }
      createdTasks = res.body.project.tasks.length;
    }
    results.push({
      tasks: size,
      edges,
      requestBytes: bytes,
      createdTasks,
      create: summarize(creates),
      rejectedAtGraphValidation: summarize(rejectedCycle),
      rejectedAfterPinning: summarize(rejectedPermission),
      failures,
      lastFailure,
    });
    log(
      `planning ${size} tasks${live ? " (live agents)" : ""}: create p50 ${ms(summarize(creates).p50)} ms, p95 ${ms(summarize(creates).p95)} ms` +
        (live
          ? ""
          : `; rejected at graph validation p50 ${ms(summarize(rejectedCycle).p50)} ms, after pinning p50 ${ms(summarize(rejectedPermission).p50)} ms`),
    );
  }
  return results;
}

/**
 * Creates `config.projects` projects of 20 tasks at once and follows them to the end. The queue probe sends
 * one poison message a second during the load. CPU of workerd and ClickHouse is sampled every SAMPLE_MS and read at the moment
 * the last project finished (from its timeline).
 */
async function runLoad(platform, setupResult, probe, clickhouse, label) {
  const base = platform.url;
  const pids = workerdPids();
  const cpuPids = [...pids, clickhouse.pid];
  const graph = twentyTaskGraph(setupResult.capsule);
  const sample = () => cpuSample(cpuPids, pids);
  const samples = [sample()];
  const load = [loadavg()[0]];
  const startedAt = Date.now();
  const stubTimingsBefore = stubTimings.length;
  const batchesBefore = queueBatches.length;
  probe.start(PROBE_EVERY_MS);
  const creates = await Promise.all(
    Array.from({ length: config.projects }, async (_, i) => {
      const owner = setupResult.owners[i % setupResult.owners.length];
      const started = performance.now();
      const res = await api(base, "/v1/projects", {
        token: owner.apiKey,
        json: {
          name: `${label}-${i}`,
          spec: { tasks: graph },
          budget: { tokens: BUDGET_TOKENS },
          maxParallelAgents: config.parallel,
        },
      });
      const latency = performance.now() - started;
      if (res.status !== 201)
        throw new Error(`create ${label}-${i}: ${res.status} ${JSON.stringify(res.body)}`);
      return { id: res.body.project.id, owner, latency };
    }),
  );
  const createdAllAt = Date.now();
  log(`${label}: ${creates.length} projects created in ${((createdAllAt - startedAt) / 1000).toFixed(2)} s`);

  // Follow them through each owner's project list (the coordinators mirror their status into D1).
  const statuses = new Map(creates.map((c) => [c.id, "running"]));
  const deadline = Date.now() + config.timeoutSeconds * 1000;
  let lastLog = Date.now();
  let polls = 0;
  let lastPoll = 0;
  while (Date.now() < deadline) {
    await sleep(SAMPLE_MS);
    samples.push(sample());
    // The status polls are requests to the platform too: few of them (one list per owner every POLL_MS).
    if (Date.now() - lastPoll < POLL_MS) continue;
    lastPoll = Date.now();
    polls += setupResult.owners.length;
    for (const owner of setupResult.owners) {
      const res = await api(base, "/v1/projects?limit=200", { token: owner.apiKey });
      for (const item of res.body?.items ?? []) if (statuses.has(item.id)) statuses.set(item.id, item.status);
    }
    const open = [...statuses.values()].filter((s) => !TERMINAL.has(s)).length;
    if (open === 0) break;
    if (Date.now() - lastLog > 10_000) {
      lastLog = Date.now();
      log(
        `${label}: ${config.projects - open}/${config.projects} projects finished after ${((Date.now() - startedAt) / 1000).toFixed(0)} s`,
      );
    }
  }
  samples.push(sample());
  load.push(loadavg()[0]);
  const probes = await probe.stop();
  const stubCalls = stubTimings.slice(stubTimingsBefore);
  const agentBatches = queueBatches.slice(batchesBefore).filter((b) => b.queue === "soma-agent-tasks");
  const timedOut = [...statuses.values()].some((s) => !TERMINAL.has(s));

  // Reports: the timeline of every project.
  const projects = [];
  for (const c of creates) {
    const res = await api(base, `/v1/projects/${c.id}/report`, { token: c.owner.apiKey });
    if (res.status !== 200) throw new Error(`report ${c.id}: ${res.status}`);
    projects.push({
      id: c.id,
      createLatency: c.latency,
      status: res.body.report.project.status,
      report: res.body.report,
      times: taskTimes(res.body.report),
    });
  }
  const finishedAt = Math.max(...projects.map((p) => p.times.finishedAt ?? Date.now()));
  // CPU from the start to the first sample taken after the last project finished.
  const endSample =
    samples.find((s) => performance.timeOrigin + s.at >= finishedAt) ?? samples[samples.length - 1];
  const cpu = cpuDelta(samples[0], endSample);
  const workerdSeconds = pids.reduce((n, pid) => n + (cpu.perProcess[pid] ?? 0), 0);
  const clickhouseSeconds = cpu.perProcess[clickhouse.pid] ?? 0;

  const tasks = projects.flatMap((p) => p.times.tasks);
  const completed = tasks.filter((t) => t.completed !== undefined).length;
  const diff = (key, from) =>
    tasks.filter((t) => t[key] !== undefined && t[from] !== undefined).map((t) => t[key] - t[from]);
  // Tasks running at once (started .. settled), across all projects.
  const edges = tasks.flatMap((t) =>
    t.started !== undefined && t.settled !== undefined
      ? [
          [t.started, 1],
          [t.settled, -1],
        ]
      : [],
  );
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let running = 0;
  let peakRunning = 0;
  for (const [, d] of edges) {
    running += d;
    peakRunning = Math.max(peakRunning, running);
  }
  const wallSeconds = (finishedAt - startedAt) / 1000;
  const attempts = projects.reduce((n, p) => n + Number(p.report.totals.attempts ?? 0), 0);
  // Every coordinator event goes to ClickHouse through the events queue: wait (bounded) until all are there.
  const expectedEvents = projects.reduce((n, p) => n + p.report.timeline.length, 0);
  const ids = projects.map((p) => `'${p.id}'`).join(",");
  const countEvents = async () => {
    const [row] = await clickhouse.rows(
      `SELECT count() AS n, uniqExact(id) AS distinct_ids FROM events WHERE project_id IN (${ids})`,
    );
    return { stored: Number(row.n), distinct: Number(row.distinct_ids) };
  };
  let events = await countEvents();
  const eventsDeadline = Date.now() + EVENTS_WAIT_SECONDS * 1000;
  while (events.stored < expectedEvents && Date.now() < eventsDeadline) {
    await sleep(500);
    events = await countEvents();
  }
  const clickhouseEvents = {
    expected: expectedEvents,
    ...events,
    allStoredSecondsAfterLastProject:
      events.stored >= expectedEvents ? (Date.now() - finishedAt) / 1000 : null,
  };
  return {
    label,
    projects: projects.length,
    statuses: Object.fromEntries(
      [...new Set(projects.map((p) => p.status))].map((s) => [
        s,
        projects.filter((p) => p.status === s).length,
      ]),
    ),
    timedOut,
    tasks: tasks.length,
    completedTasks: completed,
    attempts,
    createAllSeconds: (createdAllAt - startedAt) / 1000,
    createLatency: summarize(projects.map((p) => p.createLatency)),
    wallSeconds,
    tasksPerSecond: completed / wallSeconds,
    projectDuration: summarize(
      projects.filter((p) => p.times.finishedAt).map((p) => p.times.finishedAt - p.times.createdAt),
    ),
    readyWait: summarize(diff("dispatched", "ready")),
    readyToRunning: summarize(diff("started", "dispatched")),
    readyToStarted: summarize(diff("started", "ready")),
    run: summarize(diff("settled", "started")),
    settleToCompleted: summarize(diff("completed", "settled")),
    readyToCompleted: summarize(diff("completed", "ready")),
    peakRunning,
    queueProbe: {
      count: probes.count,
      sent: probes.sent,
      everyMs: PROBE_EVERY_MS,
      p50: probes.p50,
      p95: probes.p95,
      p99: probes.p99,
      max: probes.max,
      lost: probes.lost,
    },
    // Batches the agent-tasks queue delivered: how many messages each held and how long the consumer took
    // (the queue hands out the next batch only when this one is done).
    agentBatches: {
      count: agentBatches.length,
      messages: summarize(agentBatches.map((b) => b.total)),
      ms: summarize(agentBatches.map((b) => b.ms)),
      retried: agentBatches.filter((b) => b.acked < b.total).length,
      busySeconds: agentBatches.reduce((n, b) => n + b.ms, 0) / 1000,
    },
    statusPolls: polls,
    coordinatorCalls:
      stubCalls.length > 0
        ? {
            startAttempt: summarize(stubCalls.map((c) => c[0])),
            settleAttempt: summarize(stubCalls.map((c) => c[1])),
          }
        : null,
    cpu: {
      windowSeconds: cpu.wallSeconds,
      workerdSeconds,
      workerdMsPerTask: (workerdSeconds * 1000) / completed,
      workerdCores: workerdSeconds / cpu.wallSeconds,
      workerdBusiestThreadCores: Math.max(...pids.map((pid) => cpu.busiestThread[pid]?.cores ?? 0)),
      workerdThreads: pids.reduce((n, pid) => n + (cpu.busiestThread[pid]?.threads ?? 0), 0),
      clickhouseSeconds,
      benchNodeSeconds: cpu.nodeSeconds,
    },
    clickhouseEvents,
    loadAverage: load,
  };
}

/**
 * The platform with its events consumers writing to the run's ClickHouse, and for agent-tasks: the real
 * consumer (`agents`), the stand-in (`stub`) or none (`paused`: dispatched messages wait in the queue).
 */
async function platformWithClickHouse(clickhouse, probe, agents) {
  const others = ["soma-events", "soma-events-dlq", "soma-agent-tasks-dlq"];
  return startPlatform(root, {
    queueConsumers: agents === "agents" ? true : others,
    bindings: clickhouse.bindings,
    extraWorkers:
      agents === "stub"
        ? ({ name, queueConsumers }) => [stubAgentWorker(name, queueConsumers["soma-agent-tasks"])]
        : [],
    onLog: (line) => {
      probe?.onLog(line);
      collectStubTimings(line);
    },
    onQueueBatch: (batch) => queueBatches.push(batch),
  });
}

async function main() {
  const benchStarted = performance.now();
  const runAt = new Date().toISOString();
  const results = { runAt, config, machine: machine(), versions: await versions(root) };
  log(
    `${results.machine.cores} cores, ${results.machine.cpu}; node ${process.versions.node}; load average ${results.machine.loadAverage.join(" ")}`,
  );

  const clickhouse = await startBenchClickHouse();
  log(`ClickHouse ${clickhouse.url} (pid ${clickhouse.pid}), migrations ${clickhouse.migrations.join(", ")}`);
  try {
    // Pass 0: planning alone, agents paused.
    let phase = performance.now();
    let platform = await platformWithClickHouse(clickhouse, null, "paused");
    try {
      const setupResult = await setup(platform);
      results.planningBaseline = { healthz: await sequential(30, () => fetch(`${platform.url}/healthz`)) };
      results.planning = await measurePlanning(platform, setupResult, config.planSizes, { live: false });
      results.planningWorkerErrors = errorCounts(platform.workerErrors);
    } finally {
      await platform.stop();
    }
    results.planningSeconds = (performance.now() - phase) / 1000;

    // Pass 1: the real agents.
    const probe = queueProbe();
    phase = performance.now();
    platform = await platformWithClickHouse(clickhouse, probe, "agents");
    results.startup = { buildMs: platform.buildMs, totalMs: performance.now() - phase };
    log(
      `platform at ${platform.url} (workerd ${workerdPids().join(", ")}), built in ${ms(platform.buildMs)} ms`,
    );
    try {
      await probe.attach(platform);
      const setupResult = await setup(platform);
      results.setup = {
        seconds: setupResult.seconds,
        reviewer: setupResult.reviewer,
        accounts: setupResult.owners.length,
      };
      log(
        `setup: reviewer ${setupResult.reviewer}, 2 worker capsules, ${setupResult.owners.length} owner accounts in ${setupResult.seconds.toFixed(1)} s`,
      );

      results.baseline = {
        healthz: await sequential(30, () => fetch(`${platform.url}/healthz`)),
        queueIdle: await probe.series(IDLE_PROBES),
        idleCpu: await idleCpu(workerdPids()),
      };
      log(
        `baseline: /healthz p50 ${ms(results.baseline.healthz.p50)} ms; idle agent-tasks queue hop p50 ${ms(results.baseline.queueIdle.p50)} ms, p95 ${ms(results.baseline.queueIdle.p95)} ms; idle workerd ${(results.baseline.idleCpu.perSecond * 1000).toFixed(0)} ms CPU/s`,
      );

      results.planningLive = await measurePlanning(platform, setupResult, config.planSizes, { live: true });
      await sleep(2000);

      results.full = await runLoad(platform, setupResult, probe, clickhouse, "agents");
      log(
        `agents: ${results.full.completedTasks}/${results.full.tasks} tasks in ${results.full.wallSeconds.toFixed(1)} s = ${results.full.tasksPerSecond.toFixed(1)} tasks/s`,
      );
      results.full.workerErrors = errorCounts(platform.workerErrors);
    } finally {
      await platform.stop();
    }

    // Pass 2: the coordinator alone (agents replaced by a stand-in that settles at once).
    if (config.coordinatorOnly) {
      const stubProbe = queueProbe();
      platform = await platformWithClickHouse(clickhouse, stubProbe, "stub");
      try {
        await stubProbe.attach(platform);
        const setupResult = await setup(platform);
        results.stubBaseline = {
          queueIdle: await stubProbe.series(IDLE_PROBES),
          idleCpu: await idleCpu(workerdPids()),
        };
        await sleep(1000);
        results.coordinatorOnly = await runLoad(platform, setupResult, stubProbe, clickhouse, "stub");
        log(
          `stub agents: ${results.coordinatorOnly.completedTasks}/${results.coordinatorOnly.tasks} tasks in ${results.coordinatorOnly.wallSeconds.toFixed(1)} s = ${results.coordinatorOnly.tasksPerSecond.toFixed(1)} tasks/s`,
        );
        results.coordinatorOnly.workerErrors = errorCounts(platform.workerErrors);
      } finally {
        await platform.stop();
      }
    }
  } finally {
    await clickhouse.stop();
  }
  results.totalSeconds = (performance.now() - benchStarted) / 1000;
  report(results);
  const dir = join(root, "bench", "results");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `kamachiq-${runAt.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  log(`results written to ${file}`);
}

function report(r) {
  const p = r.planning;
  console.log(
    `\nPlanning: POST /v1/projects with an explicit graph, one request at a time, agents paused, ${r.config.planSamples} samples per size (ms). "cycle" is the same request with a cycle (auth, JSON, zod, reviewer pinned, graph validation); "permission" the same graph refused after every capsule is pinned; "create" the whole path (coordinator create + first dispatch).`,
  );
  console.log(
    table(
      [
        "tasks",
        "edges",
        "KiB",
        "create p50",
        "create p95",
        "create max",
        "cycle p50",
        "permission p50",
        "failures",
      ],
      p.map((s) => [
        s.tasks,
        s.edges,
        (s.requestBytes / 1024).toFixed(1),
        ms(s.create.p50),
        ms(s.create.p95),
        ms(s.create.max),
        ms(s.rejectedAtGraphValidation.p50),
        ms(s.rejectedAfterPinning.p50),
        s.failures,
      ]),
    ),
  );
  console.log(
    `baseline GET /healthz, one at a time, same platform: p50 ${ms(r.planningBaseline.healthz.p50)} ms, p95 ${ms(r.planningBaseline.healthz.p95)} ms`,
  );
  console.log(`\nThe same creates while the real agents run (each project cancelled once created), ms:`);
  console.log(
    table(
      ["tasks", "n", "create p50", "create p95", "create max", "failures"],
      r.planningLive.map((s) => [
        s.tasks,
        s.create.count,
        ms(s.create.p50),
        ms(s.create.p95),
        ms(s.create.max),
        s.failures,
      ]),
    ),
  );
  const rows = [];
  const add = (name, s) => rows.push([name, s.count, ms(s.p50), ms(s.p95), ms(s.p99), ms(s.max)]);
  add("agent-tasks queue hop, idle (probe)", r.baseline.queueIdle);
  for (const pass of [r.full, r.coordinatorOnly].filter(Boolean)) {
    const tag = pass.label === "agents" ? "real agents" : "stand-in agents";
    add(`[${tag}] queue hop under load (probe)`, pass.queueProbe);
    add(`[${tag}] ready -> running (dispatched -> started)`, pass.readyToRunning);
    add(`[${tag}] ready wait (ready -> dispatched)`, pass.readyWait);
    add(`[${tag}] ready -> started`, pass.readyToStarted);
    add(`[${tag}] run (started -> settled)`, pass.run);
    add(`[${tag}] ready -> completed`, pass.readyToCompleted);
    add(`[${tag}] project duration`, pass.projectDuration);
    add(`[${tag}] POST /v1/projects, all at once`, pass.createLatency);
    add(`[${tag}] agent-tasks batch: consumer time`, pass.agentBatches.ms);
    add(`[${tag}] agent-tasks batch: messages`, pass.agentBatches.messages);
    if (pass.coordinatorCalls) {
      add(`[${tag}] startAttempt RPC, as the agent sees it`, pass.coordinatorCalls.startAttempt);
      add(`[${tag}] settleAttempt RPC, as the agent sees it`, pass.coordinatorCalls.settleAttempt);
    }
  }
  console.log(
    `\n${r.config.projects} projects x ${TASKS_PER_PROJECT} tasks created at once, maxParallelAgents ${r.config.parallel} (ms)`,
  );
  console.log(table(["figure", "n", "p50", "p95", "p99", "max"], rows));
  const passRows = [r.full, r.coordinatorOnly]
    .filter(Boolean)
    .map((pass) => [
      pass.label === "agents" ? "real agents" : "stand-in agents",
      `${pass.completedTasks}/${pass.tasks}`,
      pass.attempts,
      pass.wallSeconds.toFixed(1),
      pass.tasksPerSecond.toFixed(1),
      pass.peakRunning,
      pass.cpu.workerdSeconds.toFixed(1),
      pass.cpu.workerdMsPerTask.toFixed(1),
      pass.cpu.workerdCores.toFixed(2),
      pass.cpu.workerdBusiestThreadCores.toFixed(2),
      pass.cpu.clickhouseSeconds.toFixed(1),
      `${pass.clickhouseEvents.stored}/${pass.clickhouseEvents.expected} (${pass.clickhouseEvents.distinct} ids)`,
      pass.loadAverage.map((v) => v.toFixed(1)).join("/"),
    ]);
  console.log(
    table(
      [
        "pass",
        "tasks done",
        "attempts",
        "wall s",
        "tasks/s",
        "peak running",
        "workerd CPU s",
        "CPU ms/task",
        "cores",
        "busiest thread",
        "ClickHouse CPU s",
        "events in CH",
        "load",
      ],
      passRows,
    ),
  );
  console.log(`idle workerd: ${(r.baseline.idleCpu.perSecond * 1000).toFixed(0)} ms CPU per second`);
  for (const pass of [r.full, r.coordinatorOnly].filter(Boolean)) {
    if (Object.keys(pass.workerErrors ?? {}).length)
      console.log(`${pass.label}: worker errors ${JSON.stringify(pass.workerErrors)}`);
    const e = pass.clickhouseEvents;
    console.log(
      `${pass.label}: ${e.stored} of ${e.expected} coordinator events in ClickHouse (${e.distinct} distinct ids)${e.allStoredSecondsAfterLastProject === null ? " - NOT ALL STORED" : `, all stored ${e.allStoredSecondsAfterLastProject.toFixed(1)} s after the last project finished`}; queue probe: ${pass.queueProbe.count} of ${pass.queueProbe.sent} received`,
    );
    if (pass.timedOut) console.log(`${pass.label}: TIMED OUT; statuses ${JSON.stringify(pass.statuses)}`);
  }
  console.log(`\nWhole bench: ${r.totalSeconds.toFixed(0)} s`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
