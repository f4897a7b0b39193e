import { summarize } from "./stats.mjs";

/**
 * Splits one catalog search into its parts without touching the Worker: the SQL it runs (timed inside D1,
 * by D1 itself) and the re-ranking it does in JavaScript, re-run here in Node on the same rows.
 * The trigram, MATCH and ranking code mirror searchCatalog in workers/shared/marketplace/catalog.ts; keep
 * them in step if that changes.
 */

const SEARCH_CANDIDATES = 300;

function trigrams(text) {
  const out = new Set();
  for (const word of text.toLowerCase().split(/[^a-z0-9]+/)) {
    for (let i = 0; i + 3 <= word.length; i++) out.add(word.slice(i, i + 3));
  }
  return out;
}

function rank(rows, queryTrigrams) {
  const scored = rows
    .map((raw) => {
      const row = { ...raw, tags: JSON.parse(raw.tags), installCount: raw.install_count };
      const nameHits = [...queryTrigrams].filter((t) => trigrams(row.name.replace("/", " ")).has(t)).length;
      const text = trigrams(`${row.description} ${row.tags.join(" ")}`);
      const textHits = [...queryTrigrams].filter((t) => text.has(t)).length;
      const coverage = Math.max(nameHits, textHits) / queryTrigrams.size;
      return { row, coverage, score: (2 * nameHits + textHits) / queryTrigrams.size };
    })
    .filter((s) => s.coverage >= 0.4);
  scored.sort(
    (a, b) =>
      b.score - a.score || b.row.installCount - a.row.installCount || a.row.name.localeCompare(b.row.name),
  );
  return scored;
}

/** D1's own timing of a statement, averaged over `runs`. */
async function timeSql(db, statement, params, runs) {
  const durations = [];
  let meta;
  let results;
  for (let i = 0; i < runs; i++) {
    ({ meta, results } = await db
      .prepare(statement)
      .bind(...params)
      .all());
    durations.push(meta.timings?.sql_duration_ms ?? meta.duration);
  }
  return {
    meanMs: durations.reduce((a, b) => a + b, 0) / durations.length,
    rows: results.length,
    results,
  };
}

/**
 * Profiles the text search for `q` (null when the query has no trigram, which takes the LIKE path).
 * @param {D1Database} db Miniflare's D1 binding
 */
export async function profileSearch(db, q, runs = 20) {
  const queryTrigrams = trigrams(q.trim());
  if (queryTrigrams.size === 0) return null;
  const match = [...queryTrigrams].map((t) => `"${t}"`).join(" OR ");
  const matching = await timeSql(
    db,
    "SELECT count(*) AS n FROM capsules_fts WHERE capsules_fts MATCH ?",
    [match],
    1,
  );
  const fts = await timeSql(
    db,
    "SELECT capsule_id FROM capsules_fts WHERE capsules_fts MATCH ? ORDER BY rank LIMIT ?",
    [match, SEARCH_CANDIDATES],
    runs,
  );
  const product = await timeSql(
    db,
    "SELECT c.* FROM capsules c WHERE c.id IN (SELECT capsule_id FROM capsules_fts WHERE capsules_fts MATCH ? ORDER BY rank LIMIT ?)",
    [match, SEARCH_CANDIDATES],
    runs,
  );
  const rankTimes = [];
  let kept = 0;
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    kept = rank(product.results, queryTrigrams).length;
    rankTimes.push(performance.now() - started);
  }
  return {
    trigrams: queryTrigrams.size,
    matchingRows: matching.results[0].n,
    ftsTop300Ms: fts.meanMs,
    searchSqlMs: product.meanMs,
    candidates: product.rows,
    rankingMs: summarize(rankTimes).p50,
    keptAfterRanking: kept,
  };
}
