import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

const clients = new WeakMap<D1Database, ReturnType<typeof drizzle<typeof schema>>>();

/**
 * The drizzle client over the D1 binding. Building one derives the relational config of the whole schema,
 * so each binding's client is made once and shared by the requests of the isolate (it holds no state).
 */
export function database(d1: D1Database) {
  let client = clients.get(d1);
  if (!client) {
    client = drizzle(d1, { schema });
    clients.set(d1, client);
  }
  return client;
}

export type Database = ReturnType<typeof database>;

/** D1 binds at most 100 parameters per statement. */
export const IDS_PER_QUERY = 90;

/** Splits a list into runs of at most `size`. */
export function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** True when a D1 error is a UNIQUE constraint violation (the row already exists). */
export function isUniqueViolation(error: unknown): boolean {
  return (
    error instanceof Error &&
    /UNIQUE constraint failed/i.test(`${error.message} ${String(error.cause ?? "")}`)
  );
}

export function newId(prefix: string): string {
  return `${prefix}_${crypto.randomUUID().replace(/-/g, "")}`;
}

export function nowIso(): string {
  return new Date().toISOString();
}
