/**
 * Ranked text searches this isolate computed in the last few seconds, keyed by everything that decides the
 * ranking (query, filters, sort, whether the search widened to any trigram) and not by page size or cursor:
 * the pages of one search, and the same search with another `limit`, reuse one ranking instead of one FTS
 * query and one re-ranking each. Answers may be as old as the window, as the catalog's Cache API entries
 * already are; listing changes made by this isolate (publish, yank, a publisher's verification) clear it at
 * once. Bounded; the oldest entry goes first.
 */

export const RANKED_SEARCH_TTL_MS = 5_000;
const MAX_RANKED_SEARCHES = 500;

interface Entry<T> {
  at: number;
  /** Candidates the FTS query returned, before the coverage filter (decides whether to widen). */
  candidates: number;
  ranked: T[];
}

const entries = new Map<string, Entry<unknown>>();

export function rankedSearch<T>(key: string, now = Date.now()): Entry<T> | undefined {
  const entry = entries.get(key) as Entry<T> | undefined;
  if (!entry) return undefined;
  if (now - entry.at >= RANKED_SEARCH_TTL_MS) {
    entries.delete(key);
    return undefined;
  }
  return entry;
}

export function rememberRankedSearch<T>(
  key: string,
  candidates: number,
  ranked: T[],
  now = Date.now(),
): void {
  entries.delete(key);
  if (entries.size >= MAX_RANKED_SEARCHES) {
    const oldest = entries.keys().next();
    if (!oldest.done) entries.delete(oldest.value);
  }
  entries.set(key, { at: now, candidates, ranked });
}

/** Forgets every remembered search: the catalog's listings changed. */
export function forgetRankedSearches(): void {
  entries.clear();
}
