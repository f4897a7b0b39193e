import type { CapsuleManifest } from "../domain/manifest";
import { Logger } from "../observability/logger";

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

/** The platform's own price per 1,000 model tokens, by model name (micro-USD). */
export type ModelPrices = Record<string, number>;

/**
 * Reads MODEL_PRICES (JSON `{"<model>": <micro-USD per 1k tokens>}`); a malformed value prices nothing rather
 * than guessing, and is logged.
 */
export function modelPrices(raw: string | undefined): ModelPrices {
  if (!raw) return {};
  try {
    const parsed = JSON.parse(raw) as unknown;
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      const prices: ModelPrices = {};
      for (const [model, price] of Object.entries(parsed)) {
        if (typeof price === "number" && Number.isInteger(price) && price >= 0) prices[model] = price;
      }
      return prices;
    }
  } catch {
    // fall through
  }
  new Logger({ component: "pricing" }).error("MODEL_PRICES is not a JSON object of integer prices");
  return {};
}

/** The platform's charge for model tokens: tokens x the model's price per 1k, rounded half up. */
export function modelCharge(prices: ModelPrices, model: string | null, tokens: number): number {
  if (!model) return 0;
  const price = prices[model];
  return price === undefined ? 0 : Math.round((price * tokens) / 1000);
}
