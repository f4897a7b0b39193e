import { and, eq, isNull } from "drizzle-orm";
import { z } from "zod";
import type { Database } from "../db/client";
import { installs } from "../db/schema";
import { capsuleNameSchema, PRICING_MODELS } from "../domain/manifest";
import type { Price } from "../economics/prices";
import { toMicroUsd } from "../economics/pricing";
import { AppError } from "../errors";

/** A price the caller accepts for a capsule, as installs and projects take it. */
export const acceptedPriceSchema = z
  .object({
    capsule: capsuleNameSchema,
    model: z.enum(PRICING_MODELS),
    amountUsd: z.number().min(0).max(10_000),
  })
  .strict();
export type AcceptedPrice = z.output<typeof acceptedPriceSchema>;

/** A paid capsule a project would run, at the price in force. */
export interface PricedUse {
  task: string;
  capsule: string;
  price: Price;
}

const lockSchema = z.object({
  packages: z.array(
    z.object({ name: z.string(), price: z.object({ model: z.string(), amountUsd: z.number() }).optional() }),
  ),
});

const same = (price: Price, model: string, amountUsd: number) =>
  price.model === model && toMicroUsd(amountUsd) === price.amountMicroUsd;

/**
 * Refuses to run paid capsules whose price the account never accepted: each needs the price in force either in
 * `accepted` or in the lock of one of the account's active installs (which took its price when installed, so a
 * price changed since is not accepted). Throws PRICE_NOT_ACCEPTED naming every such capsule, its price and tasks.
 */
export async function requireAcceptedPrices(
  db: Database,
  accountId: string,
  uses: PricedUse[],
  accepted: AcceptedPrice[],
): Promise<void> {
  const paid = uses.filter((u) => u.price.model !== "free");
  if (paid.length === 0) return;
  const installed = (
    await db
      .select({ lock: installs.lock })
      .from(installs)
      .where(and(eq(installs.accountId, accountId), isNull(installs.removedAt)))
      .limit(1000)
  ).flatMap((row) => {
    const lock = lockSchema.safeParse(row.lock);
    return lock.success ? lock.data.packages : [];
  });
  const missing = new Map<string, { capsule: string; model: string; amountUsd: number; tasks: string[] }>();
  for (const use of paid) {
    const ok =
      accepted.some((a) => a.capsule === use.capsule && same(use.price, a.model, a.amountUsd)) ||
      installed.some(
        (p) => p.name === use.capsule && p.price && same(use.price, p.price.model, p.price.amountUsd),
      );
    if (ok) continue;
    const entry = missing.get(use.capsule) ?? {
      capsule: use.capsule,
      model: use.price.model,
      amountUsd: use.price.amountMicroUsd / 1_000_000,
      tasks: [],
    };
    entry.tasks.push(use.task);
    missing.set(use.capsule, entry);
  }
  if (missing.size === 0) return;
  const prices = [...missing.values()];
  throw new AppError(
    "PRICE_NOT_ACCEPTED",
    `Accept the price of ${prices
      .map((p) => `${p.capsule} (${p.model} ${p.amountUsd} USD, tasks ${p.tasks.join(", ")})`)
      .join("; ")} in acceptPrices, or install it accepting that price`,
    { prices },
  );
}
