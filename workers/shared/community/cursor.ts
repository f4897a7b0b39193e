import { AppError } from "../errors";

/** Deep offsets cost a scan each; past this, clients should narrow the listing instead. */
const MAX_OFFSET = 100_000;

/** An opaque page cursor over an offset, the same shape the catalog hands out. */
export function encodeCursor(offset: number): string {
  return btoa(JSON.stringify({ o: offset })).replace(/=+$/, "");
}

/** The offset in a cursor from encodeCursor (0 without one), or VALIDATION_FAILED. */
export function decodeCursor(cursor: string | undefined): number {
  if (!cursor) return 0;
  try {
    const { o } = JSON.parse(atob(cursor)) as { o: unknown };
    if (typeof o === "number" && Number.isInteger(o) && o >= 0 && o <= MAX_OFFSET) return o;
  } catch {
    // fall through to the error below
  }
  throw new AppError("VALIDATION_FAILED", "Invalid cursor: pass back the nextCursor of a previous page", {
    issues: [{ path: "cursor", message: "unrecognised cursor" }],
  });
}

/** Splits a fetched `limit + 1` rows into the page and the cursor of the next one. */
export function pageOf<T>(
  rows: T[],
  limit: number,
  offset: number,
): { items: T[]; nextCursor: string | null } {
  return {
    items: rows.slice(0, limit),
    nextCursor: rows.length > limit ? encodeCursor(offset + limit) : null,
  };
}
