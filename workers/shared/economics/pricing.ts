import type { CapsuleManifest } from "../domain/manifest";

export const MICRO = 1_000_000;

/** Dollars to integer micro-USD (the only money type the platform computes with). */
export function toMicroUsd(usd: number): number {
  return Math.round(usd * MICRO);
}

/**
 * What one execution of a capsule costs its buyer, in micro-USD: a fixed price per execution, or a price per
 * 1,000 tokens of the execution's recorded usage (rounded half up to the micro-dollar). Free capsules cost 0.
 */
export function executionCharge(pricing: CapsuleManifest["spec"]["pricing"], tokens: number): number {
  switch (pricing.model) {
    case "free":
      return 0;
    case "per_execution":
      return toMicroUsd(pricing.amountUsd);
    case "per_1k_tokens":
      return Math.round((toMicroUsd(pricing.amountUsd) * tokens) / 1000);
  }
}

/** Splits a charge: the author's share rounded down, the platform keeps the remainder, so the parts sum exactly. */
export function splitCharge(amount: number, authorSharePct: number): { author: number; platform: number } {
  const author = Math.floor((amount * authorSharePct) / 100);
  return { author, platform: amount - author };
}
