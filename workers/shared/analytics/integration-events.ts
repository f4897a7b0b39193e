import { and, eq, inArray } from "drizzle-orm";
import { z } from "zod";
import type { Database } from "../db/client";
import { capsules, installs } from "../db/schema";
import type { CloudEvent } from "../events/outbox";

/** The one platform event type an integration may send: token usage it metered itself. */
export const INTEGRATION_USAGE_TYPE = "soma.usage.tokens";

/**
 * `soma.*` types are the platform's own record (charges, earnings, installs, ratings, security, budgets...):
 * invoices, payouts and capsule analytics are computed from them, so only the platform may write them.
 * Integrations send `soma.usage.tokens` and any type outside the `soma.` namespace.
 */
export function isReservedType(type: string): boolean {
  return type.startsWith("soma.") && type !== INTEGRATION_USAGE_TYPE;
}

/** Token usage must carry real numbers; other event types carry any JSON object. */
export const usageDataSchema = z
  .object({
    inputTokens: z.int().min(0).max(1_000_000_000),
    outputTokens: z.int().min(0).max(1_000_000_000),
    model: z.string().max(200).optional(),
    capsule: z.string().max(200).optional(),
    projectId: z.string().max(128).optional(),
  })
  .passthrough();

/** Amounts are integer micro-USD and never negative: a negative amount would be a credit nobody granted. */
const amountSchema = z.int().min(0).max(Number.MAX_SAFE_INTEGER);

export interface EventProblem {
  index: number;
  /** The offending field, e.g. `type` or `data.amountMicroUsd`. */
  field: string;
  message: string;
}

/**
 * Checks a request of integration events against what an account may record about itself, without I/O except
 * one D1 lookup when usage names capsules: a usage event's `capsule` must be one the account owns or has
 * installed, so an account cannot inflate another author's executions.
 */
export async function integrationEventProblems(
  db: Database,
  accountId: string,
  events: CloudEvent[],
  now = Date.now(),
): Promise<EventProblem[]> {
  const problems: EventProblem[] = [];
  const namedCapsules = new Map<string, number>();
  events.forEach((event, index) => {
    if (isReservedType(event.type)) {
      problems.push({
        index,
        field: "type",
        message: `${event.type} is reserved for the platform; send ${INTEGRATION_USAGE_TYPE} or a type outside soma.*`,
      });
    }
    if (event.type === INTEGRATION_USAGE_TYPE) {
      const usage = usageDataSchema.safeParse(event.data);
      if (!usage.success) {
        const issue = usage.error.issues[0];
        problems.push({
          index,
          field: `data.${issue?.path.join(".")}`,
          message: issue?.message ?? "invalid",
        });
      } else if (usage.data.capsule !== undefined && !namedCapsules.has(usage.data.capsule)) {
        namedCapsules.set(usage.data.capsule, index);
      }
    }
    if ("amountMicroUsd" in event.data && !amountSchema.safeParse(event.data.amountMicroUsd).success) {
      problems.push({
        index,
        field: "data.amountMicroUsd",
        message: "must be a non-negative integer (micro-USD)",
      });
    }
    if (Date.parse(event.time) > now + 5 * 60_000) {
      problems.push({ index, field: "time", message: "is in the future" });
    }
  });
  const allowed = new Set<string>();
  const names = [...namedCapsules.keys()];
  // D1 binds at most 100 values per statement.
  for (let i = 0; i < names.length; i += 90) {
    const chunk = names.slice(i, i + 90);
    const [owned, installed] = await Promise.all([
      db
        .select({ name: capsules.name })
        .from(capsules)
        .where(and(inArray(capsules.name, chunk), eq(capsules.ownerId, accountId))),
      // An install removed since still vouches for usage recorded while it was active (backfill).
      db
        .selectDistinct({ name: installs.capsuleName })
        .from(installs)
        .where(and(eq(installs.accountId, accountId), inArray(installs.capsuleName, chunk))),
    ]);
    for (const row of [...owned, ...installed]) allowed.add(row.name);
  }
  for (const [name, index] of namedCapsules) {
    if (!allowed.has(name)) {
      problems.push({
        index,
        field: "data.capsule",
        message: `${name} is neither a capsule of this account nor installed by it`,
      });
    }
  }
  return problems.sort((a, b) => a.index - b.index);
}
