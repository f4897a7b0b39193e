/**
 * Retention of raw events. ClickHouse keeps the last `RETENTION_DAYS` days of `events` hot; older days (daily
 * partitions) are exported to R2 as gzip-compressed NDJSON, one object per day, checked, then dropped. The
 * hourly rollups are never touched by retention, so dashboards and invoices keep their history. A day can be
 * re-imported: its rollup rows are deleted first and rebuilt by the materialized view from the re-inserted
 * raw rows, so the rollups never count a day twice.
 *
 * Day boundaries are the ClickHouse server's `toDate(time)` (the partition key); deployments run in UTC.
 */
import { z } from "zod";
import { AppError } from "../errors";
import { type ClickHouseEnv, command, insertRows, queryRows } from "./clickhouse";
import type { EventRow } from "./events";
import { ident, join, type Sql, sql } from "./sql";

/** What retention needs: ClickHouse, the R2 bucket holding the archive and the optional retention setting. */
export type RetentionEnv = ClickHouseEnv & { BUNDLES: R2Bucket; RETENTION_DAYS?: string };

/** Days of raw events kept hot when `RETENTION_DAYS` is unset. */
export const DEFAULT_RETENTION_DAYS = 30;
/** Days handled per run: bounds one cron invocation's work; the next run continues with the next days. */
export const DEFAULT_MAX_DAYS_PER_RUN = 7;
/** How long a re-imported day stays hot before retention archives it again. */
export const DEFAULT_KEEP_RESTORED_DAYS = 7;

const ARCHIVE_PREFIX = "analytics/archive/events/";
const RESTORE_PREFIX = "analytics/archive/restores/";
const ARCHIVE_SUFFIX = ".ndjson.gz";
const PAGE_ROWS = 10_000;
const MUTATION_TIMEOUT_MS = 120_000;
/** A re-import that has not finished after this long was interrupted and may be taken over. */
const STALE_RESTORE_MS = 15 * 60_000;
const DAY_MS = 86_400_000;
const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** R2 key of one day's archive. */
export function archiveKey(day: string): string {
  return `${ARCHIVE_PREFIX}${checkDay(day)}${ARCHIVE_SUFFIX}`;
}

/** R2 key of the marker a re-import keeps while it runs and while the restored day stays hot. */
export function restoreKey(day: string): string {
  return `${RESTORE_PREFIX}${checkDay(day)}.json`;
}

function checkDay(day: string): string {
  if (!DAY.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`)))
    throw new AppError("VALIDATION_FAILED", `Not a day (YYYY-MM-DD): ${day}`);
  return day;
}

const int = z
  .union([z.number(), z.string().regex(/^-?\d+$/)])
  .transform(Number)
  .refine(Number.isSafeInteger, "not a safe integer");
const dateTime = z.string().regex(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);

/** One archived event: every column of `events`, 64-bit counts as JSON numbers. Also validates rows read back. */
export const archivedEventSchema = z.object({
  id: z.string(),
  type: z.string(),
  source: z.string(),
  subject: z.string(),
  time: dateTime,
  account_id: z.string(),
  project_id: z.string(),
  capsule: z.string(),
  model: z.string(),
  status: z.string(),
  input_tokens: int,
  output_tokens: int,
  amount_micro_usd: int,
  data: z.string(),
  ingested_at: dateTime,
}) satisfies z.ZodType<EventRow, unknown>;

const COLUMNS = join(Object.keys(archivedEventSchema.shape).map(ident), ", ");

const restoreSchema = z.object({
  day: z.string(),
  state: z.enum(["restoring", "restored"]),
  startedAt: z.iso.datetime(),
  keepUntil: z.iso.datetime().optional(),
  /** Set when a re-import failed part-way: the next one takes over at once. */
  failedAt: z.iso.datetime().optional(),
  rows: z.number().optional(),
});
type RestoreMarker = z.output<typeof restoreSchema>;

/** `RETENTION_DAYS` as a whole number of days (30 when unset). */
export function retentionDaysFrom(env: RetentionEnv): number {
  const value = env.RETENTION_DAYS?.trim();
  if (!value) return DEFAULT_RETENTION_DAYS;
  const days = Number(value);
  if (!Number.isInteger(days) || days < 1)
    throw new AppError(
      "INVALID_STATE",
      `RETENTION_DAYS must be a whole number of days, at least 1: ${value}`,
    );
  return days;
}

/** The first day that stays hot: every day before it is older than `retentionDays` full days. */
export function retentionCutoff(now: Date, retentionDays: number): string {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return new Date(today - retentionDays * DAY_MS).toISOString().slice(0, 10);
}

/** Days that have raw events in ClickHouse (active daily partitions of `events`), oldest first. */
export async function hotDays(env: ClickHouseEnv): Promise<string[]> {
  const rows = await queryRows(
    env,
    sql`SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active`,
    z.object({ partition: z.string() }),
  );
  // 18.16 names a Date partition 2026-10-01; newer servers may quote it.
  return rows
    .map((r) => r.partition.replace(/^'(.*)'$/, "$1"))
    .filter((p) => DAY.test(p))
    .sort();
}

const dayCondition = (day: string): Sql => sql`toDate(time) = toDate(${checkDay(day)})`;

/** The day's deduplicated raw rows, a page at a time in id order (keyset paging on the sort key). */
async function* rawPages(env: ClickHouseEnv, day: string): AsyncGenerator<EventRow[]> {
  let after: string | null = null;
  for (;;) {
    const page: EventRow[] = await queryRows(
      env,
      sql`SELECT ${COLUMNS} FROM events FINAL WHERE ${dayCondition(day)} ${after === null ? sql`` : sql`AND id > ${after}`}
          ORDER BY id LIMIT ${PAGE_ROWS}`,
      archivedEventSchema,
    );
    if (page.length > 0) yield page;
    if (page.length < PAGE_ROWS) return;
    after = page[page.length - 1]!.id;
  }
}

/** Row count and newest ingestion of a day: unchanged between export and drop means nothing arrived meanwhile. */
async function fingerprint(env: ClickHouseEnv, day: string): Promise<string> {
  const [row] = await queryRows(
    env,
    sql`SELECT count() AS n, toString(max(ingested_at)) AS latest FROM events FINAL WHERE ${dayCondition(day)}`,
    z.object({ n: z.coerce.number(), latest: z.string() }),
  );
  return row ? `${row.n}@${row.latest}` : "0";
}

async function rawCount(env: ClickHouseEnv, day: string): Promise<number> {
  const [row] = await queryRows(
    env,
    sql`SELECT count() AS n FROM events WHERE ${dayCondition(day)}`,
    z.object({ n: z.coerce.number() }),
  );
  return row?.n ?? 0;
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Gzip-compressed NDJSON of the rows; only the compressed bytes are held in memory. */
async function gzipNdjson(pages: AsyncIterable<EventRow[]>): Promise<{ bytes: Uint8Array; rows: number }> {
  const gzip = new CompressionStream("gzip");
  const output = new Response(gzip.readable).arrayBuffer();
  // Keeps a failed export from surfacing as an unhandled rejection; the failure is rethrown below.
  output.catch(() => undefined);
  const writer = gzip.writable.getWriter();
  const encoder = new TextEncoder();
  let rows = 0;
  try {
    for await (const page of pages) {
      await writer.write(encoder.encode(page.map((row) => `${JSON.stringify(row)}\n`).join("")));
      rows += page.length;
    }
    await writer.close();
  } catch (error) {
    await writer.abort(error).catch(() => undefined);
    throw error;
  }
  return { bytes: new Uint8Array(await output), rows };
}

/** Parses an archive's NDJSON lines, validating each row (data read back from R2 is a trust boundary). */
async function* archivedRows(gzipped: ReadableStream<Uint8Array>, day: string): AsyncGenerator<EventRow> {
  const reader = gzipped
    .pipeThrough(new DecompressionStream("gzip"))
    .pipeThrough(new TextDecoderStream())
    .getReader();
  let pending = "";
  let line = 0;
  const parse = (text: string): EventRow => {
    line += 1;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new AppError("INTEGRITY_CHECK_FAILED", `Archive of ${day}: line ${line} is not JSON`);
    }
    const row = archivedEventSchema.safeParse(value);
    if (!row.success)
      throw new AppError(
        "INTEGRITY_CHECK_FAILED",
        `Archive of ${day}: line ${line}: ${row.error.issues[0]?.path.join(".")}: ${row.error.issues[0]?.message}`,
      );
    return row.data;
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const text of lines) if (text !== "") yield parse(text);
  }
  if (pending !== "") yield parse(pending);
}

interface Archive {
  rows: Map<string, EventRow>;
  sha256: string;
}

/** Reads a day's archive whole and checks it against its recorded digest and row count. */
async function readArchive(bucket: R2Bucket, day: string): Promise<Archive | null> {
  const object = await bucket.get(archiveKey(day));
  if (!object) return null;
  const bytes = new Uint8Array(await object.arrayBuffer());
  const sha256 = await sha256Hex(bytes);
  if (object.customMetadata?.sha256 !== sha256)
    throw new AppError("INTEGRITY_CHECK_FAILED", `Archive of ${day} does not match its recorded SHA-256`);
  const rows = new Map<string, EventRow>();
  for await (const row of archivedRows(new Blob([bytes]).stream(), day)) rows.set(row.id, row);
  if (String(rows.size) !== object.customMetadata?.rows)
    throw new AppError(
      "INTEGRITY_CHECK_FAILED",
      `Archive of ${day} holds ${rows.size} distinct events, its metadata says ${object.customMetadata?.rows}`,
    );
  return { rows, sha256 };
}

async function* inPages(rows: EventRow[]): AsyncGenerator<EventRow[]> {
  for (let i = 0; i < rows.length; i += PAGE_ROWS) yield rows.slice(i, i + PAGE_ROWS);
}

async function writeArchive(
  bucket: R2Bucket,
  day: string,
  pages: AsyncIterable<EventRow[]>,
): Promise<number> {
  const { bytes, rows } = await gzipNdjson(pages);
  const sha256 = await sha256Hex(bytes);
  await bucket.put(archiveKey(day), bytes, {
    httpMetadata: { contentType: "application/x-ndjson", contentEncoding: "gzip" },
    customMetadata: { rows: String(rows), sha256 },
  });
  // Read back what R2 now holds before anything is dropped.
  const stored = await readArchive(bucket, day);
  if (!stored || stored.sha256 !== sha256 || stored.rows.size !== rows)
    throw new AppError("INTEGRITY_CHECK_FAILED", `Archive of ${day} did not read back as written`);
  return rows;
}

async function readRestore(
  bucket: R2Bucket,
  day: string,
): Promise<{ marker: RestoreMarker; etag: string } | null> {
  const object = await bucket.get(restoreKey(day));
  if (!object) return null;
  const marker = restoreSchema.safeParse(await object.json().catch(() => null));
  if (!marker.success)
    throw new AppError("INTEGRITY_CHECK_FAILED", `Re-import marker of ${day} is not readable`);
  return { marker: marker.data, etag: object.etag };
}

const dropDay = (env: ClickHouseEnv, day: string) =>
  command(env, sql`ALTER TABLE events DROP PARTITION ${checkDay(day)}`);

/** What one retention run considers. */
export interface RetentionOptions {
  /** Days kept hot, today excluded (the cron passes `retentionDaysFrom(env)`). */
  retentionDays: number;
  now?: Date;
  /** At most this many days per run, oldest first. */
  maxDays?: number;
  /** Only consider these days (still only those older than the cutoff): a targeted run never touches others. */
  onlyDays?: string[];
}

/** What one retention run did, day by day. */
export interface RetentionResult {
  /** The first day kept hot. */
  cutoff: string;
  /** Days whose archive was written (or extended with late events), with its row count. */
  exported: { day: string; rows: number }[];
  /** Days whose raw partition was dropped after their archive checked out. */
  dropped: string[];
  /** Days left hot this run, and why. */
  skipped: { day: string; reason: string }[];
}

/**
 * Archives and drops raw days older than the cutoff, oldest first. Each step is idempotent: an archive that
 * already holds the day's rows is only checked, an archive missing late events is rewritten with them (never
 * overwritten with fewer), and a day is dropped only after its archive was read back and the day did not
 * change while it was exported. Re-imported days stay hot until their keep period ends.
 */
export async function runRetention(env: RetentionEnv, options: RetentionOptions): Promise<RetentionResult> {
  const now = options.now ?? new Date();
  const cutoff = retentionCutoff(now, options.retentionDays);
  const only = options.onlyDays ? new Set(options.onlyDays.map(checkDay)) : null;
  const due = (await hotDays(env))
    .filter((day) => day < cutoff && (only === null || only.has(day)))
    .slice(0, options.maxDays ?? DEFAULT_MAX_DAYS_PER_RUN);
  const result: RetentionResult = { cutoff, exported: [], dropped: [], skipped: [] };
  for (const day of due) {
    const restore = await readRestore(env.BUNDLES, day);
    if (restore?.marker.state === "restoring") {
      result.skipped.push({
        day,
        reason: "a re-import of this day is running or failed part-way; run it again to finish it",
      });
      continue;
    }
    if (restore?.marker.keepUntil && Date.parse(restore.marker.keepUntil) > now.getTime()) {
      result.skipped.push({ day, reason: `re-imported; kept hot until ${restore.marker.keepUntil}` });
      continue;
    }
    const before = await fingerprint(env, day);
    const archive = await readArchive(env.BUNDLES, day);
    let exported: number | null = null;
    if (archive === null) {
      exported = await writeArchive(env.BUNDLES, day, rawPages(env, day));
    } else {
      let changed = false;
      for await (const page of rawPages(env, day)) {
        for (const row of page) {
          const old = archive.rows.get(row.id);
          // The newest ingestion wins, as ReplacingMergeTree(ingested_at) would decide.
          if (!old || (row.ingested_at >= old.ingested_at && JSON.stringify(old) !== JSON.stringify(row))) {
            archive.rows.set(row.id, row);
            changed = true;
          }
        }
      }
      if (changed) {
        const rows = [...archive.rows.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        exported = await writeArchive(env.BUNDLES, day, inPages(rows));
      }
    }
    if (exported !== null) result.exported.push({ day, rows: exported });
    if ((await fingerprint(env, day)) !== before) {
      result.skipped.push({ day, reason: "events arrived while exporting; the next run archives them" });
      continue;
    }
    await dropDay(env, day);
    if (restore) await env.BUNDLES.delete(restoreKey(day));
    result.dropped.push(day);
  }
  return result;
}

async function waitForMutations(env: ClickHouseEnv, table: string): Promise<void> {
  const deadline = Date.now() + MUTATION_TIMEOUT_MS;
  for (;;) {
    const [row] = await queryRows(
      env,
      sql`SELECT count() AS n FROM system.mutations WHERE database = currentDatabase() AND table = ${table} AND is_done = 0`,
      z.object({ n: z.coerce.number() }),
    );
    if ((row?.n ?? 0) === 0) return;
    if (Date.now() > deadline)
      throw new AppError("UPSTREAM_FAILED", `Analytics store: mutations on ${table} did not finish in time`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** A restored day. */
export interface ReimportResult {
  day: string;
  rows: number;
  /** Retention leaves the day hot until then. */
  keptUntil: string;
}

/**
 * Restores one archived day into `events`, exactly once: refuses a day that still has raw events, deletes the
 * day's rollup rows (waiting for the mutation), then re-inserts the archived rows so the materialized view
 * rebuilds that day's rollups from them. A marker in R2 keeps two re-imports of a day from interleaving and
 * keeps the day hot for `keepDays`. A re-import that failed part-way is started over by the next one (at once after
 * an error, after 15 minutes when the Worker died mid-way): the partial rows are dropped first, never counted.
 */
export async function reimportDay(
  env: RetentionEnv,
  day: string,
  options: { keepDays?: number; now?: Date } = {},
): Promise<ReimportResult> {
  checkDay(day);
  const now = options.now ?? new Date();
  const head = await env.BUNDLES.head(archiveKey(day));
  if (!head) throw new AppError("NOT_FOUND", `No archive of ${day}`);
  const restore = await readRestore(env.BUNDLES, day);
  const interrupted = restore?.marker.state === "restoring";
  if (
    interrupted &&
    !restore.marker.failedAt &&
    now.getTime() - Date.parse(restore.marker.startedAt) < STALE_RESTORE_MS
  )
    throw new AppError("CONFLICT", `A re-import of ${day} started at ${restore.marker.startedAt} is running`);
  const hot = await rawCount(env, day);
  if (hot > 0 && !interrupted)
    throw new AppError(
      "INVALID_STATE",
      `${day} is hot: ClickHouse still holds ${hot} raw events of that day, so there is nothing to re-import`,
    );
  const marker: RestoreMarker = { day, state: "restoring", startedAt: now.toISOString() };
  const claimed = await env.BUNDLES.put(restoreKey(day), JSON.stringify(marker), {
    onlyIf: restore ? { etagMatches: restore.etag } : { etagDoesNotMatch: "*" },
  });
  if (!claimed) throw new AppError("CONFLICT", `Another re-import of ${day} started at the same time`);
  try {
    const archive = await readArchive(env.BUNDLES, day);
    if (!archive) throw new AppError("NOT_FOUND", `No archive of ${day}`);
    if (hot > 0) {
      // An interrupted re-import left part of the archive behind: start over, unless that would lose events.
      for await (const page of rawPages(env, day))
        if (page.some((row) => !archive.rows.has(row.id)))
          throw new AppError(
            "INVALID_STATE",
            `${day} holds events that are not in its archive; archive it first`,
          );
      await dropDay(env, day);
    }
    await command(env, sql`ALTER TABLE usage_hourly DELETE WHERE toDate(hour) = toDate(${day})`);
    await waitForMutations(env, "usage_hourly");
    await command(env, sql`ALTER TABLE charges_daily DELETE WHERE day = toDate(${day})`);
    await waitForMutations(env, "charges_daily");
    const rows = [...archive.rows.values()];
    for (let i = 0; i < rows.length; i += PAGE_ROWS)
      await insertRows(env, "events", rows.slice(i, i + PAGE_ROWS) as unknown as Record<string, unknown>[]);
    const restored = await rawCount(env, day);
    if (restored < rows.length)
      throw new AppError(
        "INTEGRITY_CHECK_FAILED",
        `Re-import of ${day} stored ${restored} of ${rows.length} events`,
      );
    const keptUntil = new Date(
      now.getTime() + (options.keepDays ?? DEFAULT_KEEP_RESTORED_DAYS) * DAY_MS,
    ).toISOString();
    const done: RestoreMarker = { ...marker, state: "restored", keepUntil: keptUntil, rows: rows.length };
    await env.BUNDLES.put(restoreKey(day), JSON.stringify(done));
    return { day, rows: rows.length, keptUntil };
  } catch (error) {
    const failed: RestoreMarker = { ...marker, failedAt: new Date().toISOString() };
    await env.BUNDLES.put(restoreKey(day), JSON.stringify(failed)).catch(() => undefined);
    throw error;
  }
}

/** One archived day as listed from R2. */
export interface ArchivedDay {
  day: string;
  key: string;
  rows: number;
  bytes: number;
  sha256: string;
  archivedAt: string;
  /** Set while a re-import keeps the day hot. */
  restoredUntil?: string;
}

/** Every archived day, oldest first, with its row count and any re-import keeping it hot. */
export async function listArchive(bucket: R2Bucket): Promise<ArchivedDay[]> {
  const days: ArchivedDay[] = [];
  let cursor: string | undefined;
  do {
    const page = await bucket.list({
      prefix: ARCHIVE_PREFIX,
      include: ["customMetadata"],
      ...(cursor ? { cursor } : {}),
    });
    for (const object of page.objects) {
      const day = object.key.slice(ARCHIVE_PREFIX.length, -ARCHIVE_SUFFIX.length);
      if (!DAY.test(day) || !object.key.endsWith(ARCHIVE_SUFFIX)) continue;
      days.push({
        day,
        key: object.key,
        rows: Number(object.customMetadata?.rows ?? 0),
        bytes: object.size,
        sha256: object.customMetadata?.sha256 ?? "",
        archivedAt: object.uploaded.toISOString(),
      });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  // Re-import markers are few (one per day restored and not yet archived again): read them all.
  const restoredUntil = new Map<string, string>();
  const markers = await bucket.list({ prefix: RESTORE_PREFIX });
  for (const object of markers.objects) {
    const day = object.key.slice(RESTORE_PREFIX.length, -".json".length);
    if (!DAY.test(day)) continue;
    const restore = await readRestore(bucket, day);
    const until = restore?.marker.keepUntil;
    if (restore && until && Date.parse(until) > Date.now()) restoredUntil.set(restore.marker.day, until);
  }
  return days
    .map((item) => {
      const until = restoredUntil.get(item.day);
      return until ? { ...item, restoredUntil: until } : item;
    })
    .sort((a, b) => (a.day < b.day ? -1 : 1));
}
