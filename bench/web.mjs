/**
 * Web app benchmark: the catalog's first load in Chromium, measured as largest contentful paint (LCP) from
 * the browser's own performance API, and the JavaScript the catalog route loads, gzipped. The baseline, taken
 * in the same run from the same server, is a bare static HTML page (a heading and a paragraph, no script).
 *
 * The Worker runs on the Miniflare API (bench/lib/server.mjs) with a seeded catalog; a small Node server in
 * this process serves web/dist and the baseline page and forwards /v1/* to the Worker, so both pages come
 * from one origin and one server. Every load uses a fresh browser context (empty cache). Stops by itself and
 * writes bench/results/web-<time>.json.
 *
 * Environment (defaults in brackets):
 *   BENCH_WEB_RUNS       cold loads of each page [9]
 *   BENCH_WEB_CAPSULES   generated capsules in the catalog, besides the first-party ones [60]
 *   SOMA_CHROMIUM        the browser [/usr/bin/chromium]
 */

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { cpus } from "node:os";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";
import { buildWeb } from "../scripts/build-web.mjs";
import { firstPartyCapsuleDirs, packCapsule } from "../scripts/lib/capsule-bundle.mjs";
import { makeCatalog, makeHandles, seededRandom } from "./lib/catalog.mjs";
import { publishAll, signUp } from "./lib/seed.mjs";
import { startPlatform } from "./lib/server.mjs";
import { ms, table } from "./lib/stats.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const RUNS = Number(process.env.BENCH_WEB_RUNS ?? 9);
const CAPSULES = Number(process.env.BENCH_WEB_CAPSULES ?? 60);
const CHROMIUM = process.env.SOMA_CHROMIUM ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const BASELINE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Baseline</title></head><body><main><h1>Task Capsules</h1>
<p>A bare static page with one heading and one paragraph of text, served by the same server as the app.</p>
</main></body></html>`;

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".json": "application/json",
};

/** Static files from web/dist (the SPA's index for unknown paths, as wrangler's assets do), /v1/* to the Worker. */
function startFrontServer(dist, workerUrl) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname.startsWith("/v1/") || url.pathname === "/healthz") {
      const upstream = await fetch(`${workerUrl}${url.pathname}${url.search}`, {
        method: req.method,
        headers: { accept: req.headers.accept ?? "*/*" },
      });
      res.writeHead(upstream.status, {
        "content-type": upstream.headers.get("content-type") ?? "text/plain",
      });
      res.end(Buffer.from(await upstream.arrayBuffer()));
      return;
    }
    if (url.pathname === "/__baseline.html") {
      res.writeHead(200, { "content-type": TYPES[".html"] });
      res.end(BASELINE_HTML);
      return;
    }
    const path = normalize(join(dist, url.pathname === "/" ? "index.html" : url.pathname));
    const file = path.startsWith(dist) ? await readFile(path).catch(() => null) : null;
    const body = file ?? (await readFile(join(dist, "index.html")));
    res.writeHead(200, {
      "content-type": TYPES[file ? extname(path) : ".html"] ?? "application/octet-stream",
    });
    res.end(body);
  });
  return new Promise((done) => {
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      done({ url: `http://127.0.0.1:${address.port}`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

async function seed(workerUrl) {
  const soma = await signUp(workerUrl, ["soma"], 1);
  for (const dir of await firstPartyCapsuleDirs(root)) {
    const { bytes } = await packCapsule(dir);
    await fetch(`${workerUrl}/v1/capsules`, {
      method: "POST",
      headers: { "content-type": "application/gzip", authorization: `Bearer ${soma.get("soma")}` },
      body: bytes,
    });
  }
  const random = seededRandom(6);
  const handles = makeHandles(Math.ceil(CAPSULES / 10), random);
  const keys = await signUp(workerUrl, handles, 4);
  const result = await publishAll(workerUrl, makeCatalog(handles, CAPSULES, 10, random), keys, {
    concurrency: 4,
    deadline: Date.now() + 10 * 60_000,
  });
  return result.published;
}

/** One cold load: a fresh context, the page until `ready` is visible, then the LCP the browser recorded. */
async function coldLoad(browser, url, ready, timeout = 30_000) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const scripts = new Map();
  page.on("response", async (response) => {
    if (response.request().resourceType() === "script") scripts.set(response.url(), await response.body());
  });
  await page.goto(url, { waitUntil: "load" });
  await page.locator(ready).first().waitFor({ timeout });
  // LCP is final once the page has painted its content; a short settle lets the last candidate land.
  await page.waitForTimeout(300);
  const lcp = await page.evaluate(
    () =>
      new Promise((done) => {
        new PerformanceObserver((list) => {
          const entries = list.getEntries();
          done(entries[entries.length - 1]?.startTime ?? Number.NaN);
        }).observe({ type: "largest-contentful-paint", buffered: true });
      }),
  );
  const nav = await page.evaluate(() => performance.getEntriesByType("navigation")[0]?.toJSON());
  await context.close();
  const js = [...scripts.values()];
  return {
    lcp,
    domContentLoaded: nav?.domContentLoadedEventEnd ?? Number.NaN,
    jsFiles: js.length,
    jsBytes: js.reduce((n, b) => n + b.length, 0),
    jsGzipBytes: js.reduce((n, b) => n + gzipSync(b, { level: 9 }).length, 0),
  };
}

/** Capsules to search for by a misspelled name: every round swaps a different pair of adjacent letters. */
const SEARCHES = ["soma/python-codegen", "soma/readme-writer", "soma/json-transform", "soma/text-stats"];

function misspell(name, round) {
  const words = name.slice("soma/".length).replace("-", " ");
  const i = 1 + (round % (words.length - 3));
  const at = words[i] === " " ? i + 1 : i;
  return `${words.slice(0, at)}${words[at + 1]}${words[at]}${words.slice(at + 2)}`;
}

/**
 * Search as you type: from the input event until the expected card is on screen (the app's 150 ms debounce,
 * the API call and the render), beside the same API call made with fetch from the same page. A search that
 * does not show the capsule within 3 s counts as a miss.
 */
async function searchLatency(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(url);
  await page.locator("#results .card").first().waitFor();
  const samples = [];
  for (let round = 0; round < RUNS; round++) {
    for (const expected of SEARCHES) {
      const q = misspell(expected, round);
      const ui = await page.evaluate(
        ({ q, expected }) =>
          new Promise((done) => {
            const input = document.getElementById("search");
            const started = performance.now();
            const check = () => {
              const cards = [...document.querySelectorAll("#results .card h3")].map((h) => h.textContent);
              const settled = document.querySelector(".status")?.textContent !== "Searching…";
              if (settled && cards.includes(expected)) done(performance.now() - started);
              else if (performance.now() - started > 3000) done(Number.NaN);
              else requestAnimationFrame(check);
            };
            input.value = q;
            input.dispatchEvent(new Event("input", { bubbles: true }));
            requestAnimationFrame(check);
          }),
        { q, expected },
      );
      const api = await page.evaluate(async (q) => {
        const started = performance.now();
        await (await fetch(`/v1/capsules?q=${encodeURIComponent(q)}&limit=24&_=${Math.random()}`)).json();
        return performance.now() - started;
      }, q);
      samples.push({ query: q, ui, api });
    }
  }
  await context.close();
  return samples;
}

const median = (values) => {
  const sorted = [...values].filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : Number.NaN;
};

const dist = await buildWeb(root);
const platform = await startPlatform(root);
let front;
let browser;
try {
  console.log(`Worker on the Miniflare API at ${platform.url}; seeding the catalog…`);
  const published = await seed(platform.url);
  front = await startFrontServer(dist, platform.url);
  const listing = await fetch(`${front.url}/v1/capsules?limit=1`);
  if (listing.status !== 200)
    throw new Error(`the catalog API answered ${listing.status}: ${await listing.text()}`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  // One warm-up of each, so the Worker's first-request costs are not counted against the first sample.
  await coldLoad(browser, `${front.url}/`, "#results .card", 120_000);
  await coldLoad(browser, `${front.url}/__baseline.html`, "h1", 120_000);
  const catalog = [];
  const baseline = [];
  for (let i = 0; i < RUNS; i++) {
    catalog.push(await coldLoad(browser, `${front.url}/`, "#results .card"));
    baseline.push(await coldLoad(browser, `${front.url}/__baseline.html`, "h1"));
  }
  const row = (name, samples) => [
    name,
    ms(median(samples.map((s) => s.lcp))),
    ms(Math.min(...samples.map((s) => s.lcp))),
    ms(Math.max(...samples.map((s) => s.lcp))),
    ms(median(samples.map((s) => s.domContentLoaded))),
    String(samples[0].jsFiles),
    (samples[0].jsBytes / 1024).toFixed(1),
    (samples[0].jsGzipBytes / 1024).toFixed(1),
  ];
  console.log(
    `\n${published} generated capsules plus the first-party ones; ${RUNS} cold loads each, ${cpus().length} cores\n`,
  );
  console.log(
    table(
      ["page", "LCP median ms", "min", "max", "DCL median ms", "JS files", "JS KiB", "JS KiB gzip"],
      [row("catalog (/)", catalog), row("baseline: bare static page", baseline)],
    ),
  );
  const searches = await searchLatency(browser, `${front.url}/`);
  console.log(
    `\n${table(
      ["search as you type (misspelled)", "median ms", "max ms"],
      [
        [
          "typed until the card shows (150 ms debounce included)",
          ms(median(searches.map((s) => s.ui))),
          ms(Math.max(...searches.map((s) => s.ui).filter(Number.isFinite))),
        ],
        [
          "baseline: the same API call with fetch",
          ms(median(searches.map((s) => s.api))),
          ms(Math.max(...searches.map((s) => s.api))),
        ],
      ],
    )}\n${searches.filter((s) => !Number.isFinite(s.ui)).length} of ${searches.length} misspelled searches missed their capsule`,
  );
  const goal = median(catalog.map((s) => s.lcp)) < 1000 && catalog[0].jsGzipBytes < 200 * 1024;
  console.log(`\nGoal (LCP under 1 s, catalog JS under 200 KB gzipped): ${goal ? "met" : "not met"}`);
  await mkdir(join(root, "bench/results"), { recursive: true });
  const out = join(root, `bench/results/web-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  await writeFile(
    out,
    JSON.stringify(
      { date: new Date().toISOString(), runs: RUNS, published, catalog, baseline, searches },
      null,
      2,
    ),
  );
  console.log(`Figures written to ${out}`);
} finally {
  await browser?.close();
  await front?.close();
  await platform.stop();
}
