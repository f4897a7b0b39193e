import { and, desc, eq, inArray, isNull, lte } from "drizzle-orm";
import { type Database, newId, nowIso } from "../db/client";
import { capsulePrices, installs } from "../db/schema";
import type { CapsuleManifest } from "../domain/manifest";
import { type CloudEvent, cloudEvent, outboxInsert } from "../events/outbox";
import { toMicroUsd } from "./pricing";

export type PricingModel = CapsuleManifest["spec"]["pricing"]["model"];

export interface Price {
  model: PricingModel;
  amountMicroUsd: number;
}

/** Price increases are announced this long before they apply. */
export const PRICE_INCREASE_NOTICE_MS = 14 * 86_400_000;

export function priceOfManifest(pricing: CapsuleManifest["spec"]["pricing"]): Price {
  return { model: pricing.model, amountMicroUsd: toMicroUsd(pricing.amountUsd) };
}

/** The price in force for a capsule at a moment (the latest announced price whose time has come), or null. */
export async function priceAt(db: Database, capsule: string, at: Date = new Date()): Promise<Price | null> {
  const [row] = await db
    .select()
    .from(capsulePrices)
    .where(and(eq(capsulePrices.capsule, capsule), lte(capsulePrices.effectiveAt, at.toISOString())))
    .orderBy(desc(capsulePrices.effectiveAt), desc(capsulePrices.createdAt))
    .limit(1);
  return row ? { model: row.model as PricingModel, amountMicroUsd: row.amountMicroUsd } : null;
}

/**
 * The prices in force for several capsules at a moment, in one query: capsules with no price row are absent
 * (their manifest's price applies).
 */
export async function pricesAt(
  db: Database,
  capsules: readonly string[],
  at: Date = new Date(),
): Promise<Map<string, Price>> {
  const prices = new Map<string, Price>();
  const names = [...new Set(capsules)];
  // D1 binds at most 100 values per statement.
  for (let i = 0; i < names.length; i += 90) {
    const rows = await db
      .select()
      .from(capsulePrices)
      .where(
        and(
          inArray(capsulePrices.capsule, names.slice(i, i + 90)),
          lte(capsulePrices.effectiveAt, at.toISOString()),
        ),
      )
      .orderBy(desc(capsulePrices.effectiveAt), desc(capsulePrices.createdAt));
    for (const row of rows) {
      if (!prices.has(row.capsule)) {
        prices.set(row.capsule, { model: row.model as PricingModel, amountMicroUsd: row.amountMicroUsd });
      }
    }
  }
  return prices;
}

/** The latest announced price (possibly not in force yet). */
export async function latestPrice(db: Database, capsule: string) {
  const [row] = await db
    .select()
    .from(capsulePrices)
    .where(eq(capsulePrices.capsule, capsule))
    .orderBy(desc(capsulePrices.effectiveAt), desc(capsulePrices.createdAt))
    .limit(1);
  return row ?? null;
}

/** A change a buyer could pay more under: anything but going free or lowering the same model's amount. */
export function isIncrease(from: Price, to: Price): boolean {
  if (to.model === "free") return false;
  if (from.model === to.model) return to.amountMicroUsd > from.amountMicroUsd;
  return true;
}

/**
 * Announces a new price for a capsule: a decrease applies at once, an increase after 14 days' notice, and every
 * active installer gets a `soma.price.changed` event (webhooks deliver it). Returns nothing to do when the
 * price is unchanged. The statements are meant for the caller's D1 batch, with its state change.
 */
export async function priceChange(db: Database, capsule: string, next: Price, now = new Date()) {
  const current = (await latestPrice(db, capsule)) ?? null;
  const from: Price | null = current
    ? { model: current.model as PricingModel, amountMicroUsd: current.amountMicroUsd }
    : null;
  if (from && from.model === next.model && from.amountMicroUsd === next.amountMicroUsd) return null;
  const effectiveAt =
    from && isIncrease(from, next) ? new Date(now.getTime() + PRICE_INCREASE_NOTICE_MS) : now;
  const row = {
    id: newId("prc"),
    capsule,
    model: next.model,
    amountMicroUsd: next.amountMicroUsd,
    effectiveAt: effectiveAt.toISOString(),
    createdAt: nowIso(),
  };
  const installers = from
    ? await db
        .selectDistinct({ accountId: installs.accountId })
        .from(installs)
        .where(and(eq(installs.capsuleName, capsule), isNull(installs.removedAt)))
    : [];
  const events: CloudEvent[] = installers.map(({ accountId }) =>
    cloudEvent("soma.price.changed", capsule, {
      accountId,
      capsule,
      from,
      to: next,
      effectiveAt: row.effectiveAt,
      increase: from ? isIncrease(from, next) : false,
    }),
  );
  return {
    row,
    statements: [db.insert(capsulePrices).values(row), ...events.map((e) => outboxInsert(db, e))],
  };
}

/** The price in force and, if one is announced, the next price with when it applies. */
export async function pricingView(db: Database, capsule: string, now = new Date()) {
  const current = await priceAt(db, capsule, now);
  const latest = await latestPrice(db, capsule);
  const upcoming = latest && latest.effectiveAt > now.toISOString() ? latest : null;
  const usd = (p: Price | null) => (p ? { model: p.model, amountUsd: p.amountMicroUsd / 1_000_000 } : null);
  return {
    current: usd(current),
    upcoming: upcoming
      ? {
          ...usd({ model: upcoming.model as PricingModel, amountMicroUsd: upcoming.amountMicroUsd }),
          effectiveAt: upcoming.effectiveAt,
        }
      : null,
  };
}
