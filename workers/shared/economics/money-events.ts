/**
 * The event types that carry money, one per side of a ledger transaction, each with `data.accountId` the
 * account it is about and `amountMicroUsd` its side's amount:
 * - a charge: what the buyer pays (the invoice and "spend" read these);
 * - an earning: the author's credit (payouts and "earnings");
 * - revenue: the platform's share of a charge, keyed by the buyer it came from (admin "revenue").
 * A charge equals its earning plus its revenue, as in the ledger.
 */
export const CHARGE_EVENT = "soma.charge.recorded";
export const EARNING_EVENT = "soma.earning.recorded";
export const REVENUE_EVENT = "soma.revenue.recorded";
