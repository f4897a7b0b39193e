/**
 * Marketplace benchmark: seeds published capsules through the real API, then measures catalog search,
 * capsule detail and install resolution of a 40-capsule, 4-level dependency tree, each beside the bare
 * `/healthz` route measured in the same run. Runs the Worker on the Miniflare API (one workerd, no dev
 * proxy), against 127.0.0.1 only, and stops by itself. Prints tables and writes bench/results/*.json.
 *
 * Environment (defaults in brackets):
 *   BENCH_CAPSULES          capsules in the catalog, the install tree included [10000]
 *   BENCH_CONNECTIONS       concurrent clients for the load runs, one pass per value [100,10]
 *   BENCH_SECONDS           seconds per load run [10]
 *   BENCH_INSTALLS          sequential installs of the full tree [50]
 *   BENCH_SEED_CONCURRENCY  uploads in flight while seeding [12]
 *   BENCH_SEED_MINUTES      seeding stops starting uploads after this long [15]
 */

import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { makeCatalog, makeHandles, makeTree, seededRandom } from "./lib/catalog.mjs";
import { loadRoute, sequential } from "./lib/load.mjs";
import { machine, versions } from "./lib/run-info.mjs";
import { profileSearch } from "./lib/search-profile.mjs";
import { publishAll, signUp } from "./lib/seed.mjs";
import { startPlatform } from "./lib/server.mjs";
import { ms, table } from "./lib/stats.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const int = (name, fallback) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer`);
  return value;
};
const config = {
  capsules: int("BENCH_CAPSULES", 10_000),
  connections: (process.env.BENCH_CONNECTIONS ?? "100,10").split(",").map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error("BENCH_CONNECTIONS must list positive integers");
    return n;
  }),
  seconds: int("BENCH_SECONDS", 10),
  installs: int("BENCH_INSTALLS", 50),
  seedConcurrency: int("BENCH_SEED_CONCURRENCY", 12),
  seedMinutes: int("BENCH_SEED_MINUTES", 15),
};
/** At most this many capsules per publisher: under the 30-a-minute submission limit however fast seeding runs. */
const PER_HANDLE = 25;
const TREE_HANDLES = 4;
const WARMUP_SECONDS = 2;
const SEQUENTIAL_SAMPLES = 20;

/** Realistic searches: whole words, two-word phrases, substrings, misspellings, two-letter prefixes, filters. */
const SEARCHES = [
  "csv cleaner",
  "kubernetes",
  "terraform validator",
  "pull request review",
  "unit test generator",
  "changelog",
  "secret scanner",
  "sql",
  "markdown",
  "summarize papers",
  "release notes",
  "docker",
  "data validation",
  "blog post",
  "sprint planning",
  "vulnerability",
  "json schema",
  "flaky test",
  "api docs",
  "graphql",
  "kuberntes",
  "terafrom",
  "changlog",
  "vulnerabilty",
  "postgress",
  "documentaion",
  "summarise",
  "playwrite",
  "dependancy",
  "typscript",
  "ci",
  "ai",
  "test&category=Testing",
  "deploy&category=DevOps",
  "scanner&pricing=free",
];
/**
 * Catalog answers are cached for a few seconds, keyed on the whole query string. Repeated searches measure
 * the cache; a distinct `limit` per request (20 to 50) makes every request of the distinct pass a miss that
 * runs the search itself.
 */
const searchPath = (q, limit = 20) =>
  `/v1/capsules?q=${q.includes("&") ? q.replace(/^[^&]+/, encodeURIComponent) : encodeURIComponent(q)}&limit=${limit}`;
const distinctSearchPaths = () => {
  const paths = [];
  for (let limit = 20; limit <= 50; limit++) for (const q of SEARCHES) paths.push(searchPath(q, limit));
  return paths;
};

const log = (message) => console.log(`[bench] ${message}`);
const elapsed = (since) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

/** Least squares y = a + b x. */
function linearFit(points) {
  const n = points.length;
  const sx = points.reduce((s, p) => s + p.x, 0);
  const sy = points.reduce((s, p) => s + p.y, 0);
  const sxx = points.reduce((s, p) => s + p.x * p.x, 0);
  const sxy = points.reduce((s, p) => s + p.x * p.y, 0);
  const b = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  return { fixedMs: (sy - b * sx) / n, perPackageMs: b };
}

async function main() {
  const benchStarted = performance.now();
  const runAt = new Date().toISOString();
  const results = { runAt, config, machine: machine(), versions: await versions(root, ["autocannon"]) };
  log(
    `${results.machine.cores} cores, ${results.machine.cpu}; node ${process.versions.node}; load average ${results.machine.loadAverage.join(" ")}`,
  );

  let phase = performance.now();
  const platform = await startPlatform(root);
  results.startup = { buildMs: platform.buildMs, totalMs: performance.now() - phase };
  log(
    `worker built in ${ms(platform.buildMs)} ms, Miniflare at ${platform.url}, migrations ${platform.migrations.join(", ")}`,
  );

  try {
    const random = seededRandom(20261125);
    const treeCapsules = 40;
    if (config.capsules <= treeCapsules) throw new Error(`BENCH_CAPSULES must be over ${treeCapsules}`);
    const catalogCount = config.capsules - treeCapsules;
    const catalogHandleCount = Math.ceil(catalogCount / PER_HANDLE);
    const handles = makeHandles(catalogHandleCount + TREE_HANDLES + 1, random);
    const installer = handles.pop();
    const treeHandles = handles.splice(0, TREE_HANDLES);
    const tree = makeTree(treeHandles, random);
    const catalog = makeCatalog(handles, catalogCount, PER_HANDLE, random);

    phase = performance.now();
    const keys = await signUp(platform.url, [...treeHandles, ...handles, installer], config.seedConcurrency);
    const signupSeconds = (performance.now() - phase) / 1000;
    log(`${keys.size} accounts signed up in ${signupSeconds.toFixed(1)} s`);

    const deadline = Date.now() + config.seedMinutes * 60_000;
    phase = performance.now();
    const treeFailures = [];
    // Versions of one capsule go up one after another, as a publisher would: concurrent first uploads of
    // the same new capsule race (see docs/benchmarks.md).
    for (let level = 4; level >= 0; level--) {
      for (let round = 0; round < 3; round++) {
        const batch = tree.publishes.filter((p) => p.level === level && p.round === round);
        const { failed } = await publishAll(platform.url, batch, keys, {
          concurrency: config.seedConcurrency,
          deadline,
        });
        treeFailures.push(...failed);
      }
    }
    if (treeFailures.length > 0)
      throw new Error(`install tree failed to publish: ${JSON.stringify(treeFailures.slice(0, 3))}`);
    log(`install tree: ${tree.publishes.length} versions of 40 capsules published in ${elapsed(phase)}`);

    phase = performance.now();
    let lastReport = performance.now();
    const seed = await publishAll(platform.url, catalog, keys, {
      concurrency: config.seedConcurrency,
      deadline,
      onProgress: (done) => {
        if (performance.now() - lastReport < 15_000) return;
        lastReport = performance.now();
        const seconds = (performance.now() - phase) / 1000;
        log(`seeding: ${done}/${catalog.length} published, ${(done / seconds).toFixed(1)} capsules/s`);
      },
    });
    const [{ n: capsuleRows }] = (await platform.db.prepare("SELECT count(*) AS n FROM capsules").all())
      .results;
    const [{ n: ftsRows }] = (await platform.db.prepare("SELECT count(*) AS n FROM capsules_fts").all())
      .results;
    results.seeding = {
      accounts: keys.size,
      signupSeconds,
      catalogUploads: catalog.length,
      published: seed.published,
      failed: seed.failed.length,
      failures: seed.failed.slice(0, 5),
      stoppedAtDeadline: seed.attempted < catalog.length,
      seconds: seed.seconds,
      perSecond: seed.published / seed.seconds,
      concurrency: config.seedConcurrency,
      capsuleRows,
      ftsRows,
    };
    log(
      `catalog seeded: ${seed.published} published (${seed.failed.length} failed) in ${seed.seconds.toFixed(1)} s = ${results.seeding.perSecond.toFixed(1)} capsules/s at ${config.seedConcurrency} in flight; ${capsuleRows} capsules in D1`,
    );
    if (seed.failed.length > 0) log(`first failure: ${JSON.stringify(seed.failed[0])}`);

    const detailPaths = [];
    for (let i = 0; i < 1000; i++) {
      detailPaths.push(`/v1/capsules/${catalog[Math.floor(random() * catalog.length)].name}`);
    }
    const searchPaths = SEARCHES.map((q) => searchPath(q));
    const routes = [
      { route: "GET /healthz (baseline)", paths: ["/healthz"] },
      { route: "GET /v1/schemas/capsule.json (no storage)", paths: ["/v1/schemas/capsule.json"] },
      { route: "GET /v1/capsules?q= (search, 35 repeated queries: cache)", paths: searchPaths },
      { route: "GET /v1/capsules?q= (search, distinct queries: no cache)", paths: distinctSearchPaths() },
      { route: "GET /v1/capsules/:ns/:name (detail)", paths: detailPaths },
      { route: "GET /healthz (baseline, again)", paths: ["/healthz"] },
    ];
    results.load = [];
    for (const connections of config.connections) {
      for (const { route, paths } of routes) {
        // Other work on the box shows in the 1-minute load average (this bench alone keeps it near 2).
        const loadBefore = loadavg()[0];
        // The warm-up walks the paths from the other end, so the measured run of the distinct searches does
        // not meet entries the warm-up just cached.
        await loadRoute(platform.url, { paths: [...paths].reverse(), connections, seconds: WARMUP_SECONDS });
        const run = await loadRoute(platform.url, { paths, connections, seconds: config.seconds });
        results.load.push({ route, ...run, loadAverage: [loadBefore, loadavg()[0]] });
        log(`${route} at ${connections}: ${run.reqPerSec.toFixed(0)} req/s, p95 ${ms(run.latency.p95)} ms`);
      }
    }

    // One caller at a time: service time without queueing, per search, beside the baseline.
    const base = platform.url;
    results.unloaded = {
      healthz: await sequential(SEQUENTIAL_SAMPLES * 3, () => fetch(`${base}/healthz`)),
      detail: await sequential(SEQUENTIAL_SAMPLES * 3, (i) =>
        fetch(`${base}${detailPaths[i % detailPaths.length]}`),
      ),
      searches: [],
    };
    for (const q of SEARCHES) {
      const path = searchPath(q);
      const hits = (await (await fetch(`${base}${path}`)).json()).items?.length ?? 0;
      // Each sample asks for a different limit, so every one runs the search (no cache hit).
      const timing = await sequential(SEQUENTIAL_SAMPLES, (i) => fetch(`${base}${searchPath(q, 21 + i)}`));
      const profile = await profileSearch(platform.db, q.split("&")[0]);
      results.unloaded.searches.push({ q, hits, ...timing, sql: profile });
    }

    // Install resolution: the full tree, sequentially, and subtrees for a fixed + per-package split.
    const installKey = keys.get(installer);
    const install = (capsule) =>
      fetch(`${base}/v1/installs`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${installKey}` },
        body: JSON.stringify({ capsule, range: "*", acceptPermissions: ["artifacts.read"] }),
      });
    const treeRoot = tree.levels[0][0];
    const first = await install(treeRoot);
    const firstBody = await first.json();
    if (first.status !== 201)
      throw new Error(`install of ${treeRoot}: ${first.status} ${JSON.stringify(firstBody)}`);
    const lockPackages = firstBody.lock.packages.length;
    results.install = {
      root: treeRoot,
      lockPackages,
      pickedSharedLeaf: firstBody.lock.packages.find((p) => p.name === tree.levels[4][12])?.version ?? null,
      healthzSequential: await sequential(config.installs, () => fetch(`${base}/healthz`)),
      full: await sequential(config.installs, () => install(treeRoot)),
      subtrees: [],
    };
    for (let level = 4; level >= 1; level--) {
      const name = tree.levels[level][0];
      const probe = await install(name);
      const packages = (await probe.json()).lock?.packages?.length ?? 0;
      const timing = await sequential(SEQUENTIAL_SAMPLES, () => install(name));
      results.install.subtrees.push({ level, name, packages, ...timing });
    }
    const points = [
      ...results.install.subtrees.map((s) => ({ x: s.packages, y: s.p50 })),
      { x: lockPackages, y: results.install.full.p50 },
    ];
    results.install.fit = linearFit(points);
    results.workerErrors = platform.workerErrors.slice(0, 10);
    results.workerErrorCount = platform.workerErrors.length;
  } finally {
    await platform.stop();
  }
  results.totalSeconds = (performance.now() - benchStarted) / 1000;
  report(results);
  const dir = join(root, "bench", "results");
  await mkdir(dir, { recursive: true });
  const file = join(dir, `marketplace-${runAt.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
  log(`results written to ${file}`);
}

function report(r) {
  const s = r.seeding;
  console.log(
    `\nSeeding: ${s.published} capsules through POST /v1/capsules in ${s.seconds.toFixed(1)} s = ${s.perSecond.toFixed(1)}/s (${s.concurrency} in flight, ${s.failed} failed${s.stoppedAtDeadline ? ", stopped at the deadline" : ""}); ${s.capsuleRows} capsules in D1; ${s.accounts} accounts in ${s.signupSeconds.toFixed(1)} s`,
  );
  console.log(
    `\nLoad: ${r.config.seconds} s per route after a ${WARMUP_SECONDS} s warm-up, latency in ms; load = 1-minute load average before/after`,
  );
  console.log(
    table(
      ["route", "clients", "req/s", "p50", "p95", "p99", "max", "errors", "non-2xx", "load"],
      r.load.map((l) => [
        l.route,
        l.connections,
        l.reqPerSec.toFixed(0),
        ms(l.latency.p50),
        ms(l.latency.p95),
        ms(l.latency.p99),
        ms(l.latency.max),
        l.errors,
        l.non2xx,
        l.loadAverage.map((v) => v.toFixed(1)).join("/"),
      ]),
    ),
  );
  const u = r.unloaded;
  console.log(
    `\nOne caller at a time (${SEQUENTIAL_SAMPLES} requests per search, ${SEQUENTIAL_SAMPLES * 3} for /healthz and detail), latency in ms. Search split: rows matching the trigram OR, SQL time inside D1 (mean), and the JavaScript re-ranking of the candidates re-run in Node`,
  );
  console.log(
    table(
      ["request", "hits", "p50", "p95", "matching", "SQL ms", "rank ms"],
      [
        ["GET /healthz (baseline)", "-", ms(u.healthz.p50), ms(u.healthz.p95), "-", "-", "-"],
        ["GET detail", "-", ms(u.detail.p50), ms(u.detail.p95), "-", "-", "-"],
        ...u.searches.map((q) => [
          `q=${q.q}`,
          q.hits,
          ms(q.p50),
          ms(q.p95),
          q.sql?.matchingRows ?? "LIKE",
          q.sql ? ms(q.sql.searchSqlMs) : "-",
          q.sql ? ms(q.sql.rankingMs) : "-",
        ]),
      ],
    ),
  );
  const profiled = u.searches.filter((q) => q.sql);
  const mean = (f) => profiled.reduce((sum, q) => sum + f(q), 0) / profiled.length;
  console.log(
    `text searches, mean: ${ms(mean((q) => q.p50))} ms end to end (p50), ${ms(mean((q) => q.sql.searchSqlMs))} ms SQL, ${ms(mean((q) => q.sql.rankingMs))} ms re-ranking, ${mean((q) => q.sql.matchingRows).toFixed(0)} matching rows of ${r.seeding.ftsRows}`,
  );
  const i = r.install;
  console.log(
    `\nInstall resolution (POST /v1/installs, one at a time), latency in ms; ${i.root} locks ${i.lockPackages} packages`,
  );
  console.log(
    table(
      ["request", "packages", "n", "p50", "p95", "p99", "failures"],
      [
        [
          "GET /healthz (baseline)",
          "-",
          i.healthzSequential.count,
          ms(i.healthzSequential.p50),
          ms(i.healthzSequential.p95),
          ms(i.healthzSequential.p99),
          i.healthzSequential.failures,
        ],
        [
          "install full tree",
          i.lockPackages,
          i.full.count,
          ms(i.full.p50),
          ms(i.full.p95),
          ms(i.full.p99),
          i.full.failures,
        ],
        ...i.subtrees.map((t) => [
          `install level-${t.level} subtree`,
          t.packages,
          t.count,
          ms(t.p50),
          ms(t.p95),
          ms(t.p99),
          t.failures,
        ]),
      ],
    ),
  );
  console.log(
    `fit over p50s: ${ms(i.fit.fixedMs)} ms fixed + ${ms(i.fit.perPackageMs)} ms per locked package`,
  );
  if (r.workerErrorCount > 0)
    console.log(`\nWorker logged ${r.workerErrorCount} errors; first: ${r.workerErrors[0]}`);
  console.log(
    `\nWhole bench: ${r.totalSeconds.toFixed(0)} s (build + start ${(r.startup.totalMs / 1000).toFixed(1)} s)`,
  );
}

await main();
