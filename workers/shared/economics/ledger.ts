import { and, asc, eq, inArray, sql } from "drizzle-orm";
import { type AuditActor, auditStatement, sealAuditLog } from "../audit/log";
import { type Database, newId, nowIso } from "../db/client";
import { accountAdjustments, capsules, capsuleVersions, ledgerEntries } from "../db/schema";
import type { CapsuleManifest } from "../domain/manifest";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { CHARGE_EVENT, EARNING_EVENT, REVENUE_EVENT } from "./money-events";
import { priceAt, priceOfManifest } from "./prices";
import { executionCharge, type ModelPrices, modelCharge, splitCharge } from "./pricing";

interface ExecutionInput {
  attemptId: string;
  buyerAccountId: string;
  capsule: string;
  version: string;
  tokens: number;
  projectId: string;
}

/**
 * Charges the platform's own price for the model tokens an attempt used (prompt capsules and `ctx.llm` calls),
 * whether or not the capsule succeeded: the provider billed those tokens either way. One transaction per attempt.
 */
async function recordModelCharge(
  db: Database,
  input: ExecutionInput & { model: string | null; modelTokens?: number; modelPrices: ModelPrices },
): Promise<number> {
  const tokens = input.modelTokens ?? input.tokens;
  const amount = modelCharge(input.modelPrices, input.model, tokens);
  if (amount === 0 || !input.model) return 0;
  const txId = `model:${input.attemptId}`;
  const now = nowIso();
  const common = {
    txId,
    capsule: input.capsule,
    projectId: input.projectId,
    attemptId: input.attemptId,
    period: periodOf(new Date(now)),
    createdAt: now,
  };
  const charge = cloudEvent(CHARGE_EVENT, `${input.capsule}@${input.version}`, {
    accountId: input.buyerAccountId,
    capsule: input.capsule,
    model: input.model,
    projectId: input.projectId,
    attemptId: input.attemptId,
    pricingModel: "model_tokens",
    tokens,
    amountMicroUsd: amount,
  });
  charge.id = `model-charge:${input.attemptId}`;
  // Model tokens are the platform's own price: all of the charge is its revenue.
  const revenue = cloudEvent(REVENUE_EVENT, `${input.capsule}@${input.version}`, {
    accountId: input.buyerAccountId,
    capsule: input.capsule,
    model: input.model,
    projectId: input.projectId,
    attemptId: input.attemptId,
    amountMicroUsd: amount,
  });
  revenue.id = `model-revenue:${input.attemptId}`;
  await db.batch([
    db
      .insert(ledgerEntries)
      .values([
        {
          id: newId("led"),
          accountId: input.buyerAccountId,
          direction: "debit",
          kind: "model_charge",
          amountMicroUsd: amount,
          ...common,
        },
        {
          id: newId("led"),
          accountId: PLATFORM_ACCOUNT,
          direction: "credit",
          kind: "model_revenue",
          amountMicroUsd: amount,
          ...common,
        },
      ])
      .onConflictDoNothing(),
    outboxInsert(db, charge).onConflictDoNothing(),
    outboxInsert(db, revenue).onConflictDoNothing(),
  ]);
  return amount;
}

/** The ledger account that receives the platform's share. */
export const PLATFORM_ACCOUNT = "platform";

function periodOf(date: Date): string {
  return date.toISOString().slice(0, 7);
}

/**
 * Records the charge for one execution of a paid capsule as one balanced transaction (buyer debit, author
 * credit, platform credit) and its events, exactly once per attempt: a repeat finds the transaction recorded.
 */
export async function recordExecutionCharge(
  db: Database,
  input: {
    attemptId: string;
    buyerAccountId: string;
    capsule: string;
    version: string;
    tokens: number;
    projectId: string;
  },
): Promise<{ amountMicroUsd: number; recorded: boolean }> {
  const [row] = await db
    .select({ manifest: capsuleVersions.manifest, ownerId: capsules.ownerId, share: capsules.authorSharePct })
    .from(capsuleVersions)
    .innerJoin(capsules, eq(capsules.id, capsuleVersions.capsuleId))
    .where(and(eq(capsuleVersions.name, input.capsule), eq(capsuleVersions.version, input.version)))
    .limit(1);
  if (!row) return { amountMicroUsd: 0, recorded: false };
  // The price in force now (announced increases wait out their notice); the manifest's for capsules published
  // before price history existed.
  const price =
    (await priceAt(db, input.capsule)) ??
    priceOfManifest((row.manifest as unknown as CapsuleManifest).spec.pricing);
  const pricing = { model: price.model, amountUsd: price.amountMicroUsd / 1_000_000 };
  const amount = executionCharge(pricing, input.tokens);
  if (amount === 0) return { amountMicroUsd: 0, recorded: false };
  const txId = `exec:${input.attemptId}`;
  const [existing] = await db
    .select({ id: ledgerEntries.id })
    .from(ledgerEntries)
    .where(eq(ledgerEntries.txId, txId))
    .limit(1);
  if (existing) return { amountMicroUsd: amount, recorded: false };
  const { author, platform } = splitCharge(amount, row.share);
  const now = nowIso();
  const period = periodOf(new Date(now));
  const common = {
    txId,
    capsule: input.capsule,
    projectId: input.projectId,
    attemptId: input.attemptId,
    period,
    createdAt: now,
  };
  const charge = cloudEvent(CHARGE_EVENT, `${input.capsule}@${input.version}`, {
    accountId: input.buyerAccountId,
    capsule: input.capsule,
    projectId: input.projectId,
    attemptId: input.attemptId,
    pricingModel: pricing.model,
    tokens: input.tokens,
    amountMicroUsd: amount,
    authorAccountId: row.ownerId,
  });
  const earning = cloudEvent(EARNING_EVENT, `${input.capsule}@${input.version}`, {
    accountId: row.ownerId,
    capsule: input.capsule,
    attemptId: input.attemptId,
    amountMicroUsd: author,
    platformMicroUsd: platform,
  });
  const revenue = cloudEvent(REVENUE_EVENT, `${input.capsule}@${input.version}`, {
    accountId: input.buyerAccountId,
    capsule: input.capsule,
    projectId: input.projectId,
    attemptId: input.attemptId,
    amountMicroUsd: platform,
  });
  // Stable ids: if two agents race on the same attempt, the ledger's UNIQUE and the events' ids dedupe them.
  charge.id = `charge:${input.attemptId}`;
  earning.id = `earning:${input.attemptId}`;
  revenue.id = `revenue:${input.attemptId}`;
  await db.batch([
    db
      .insert(ledgerEntries)
      .values([
        {
          id: newId("led"),
          accountId: input.buyerAccountId,
          direction: "debit",
          kind: "execution_charge",
          amountMicroUsd: amount,
          ...common,
        },
        {
          id: newId("led"),
          accountId: row.ownerId,
          direction: "credit",
          kind: "author_earning",
          amountMicroUsd: author,
          ...common,
        },
        {
          id: newId("led"),
          accountId: PLATFORM_ACCOUNT,
          direction: "credit",
          kind: "platform_fee",
          amountMicroUsd: platform,
          ...common,
        },
      ])
      .onConflictDoNothing(),
    outboxInsert(db, charge).onConflictDoNothing(),
    outboxInsert(db, earning).onConflictDoNothing(),
    outboxInsert(db, revenue).onConflictDoNothing(),
  ]);
  return { amountMicroUsd: amount, recorded: true };
}

/** Counts a settled execution (once per attempt) and charges it when it succeeded. */
export async function recordExecution(
  db: Database,
  input: ExecutionInput & {
    succeeded: boolean;
    model: string | null;
    /** The part of `tokens` spent on `model` (a worker's ctx.llm calls); all of them when omitted. */
    modelTokens?: number;
    modelPrices: ModelPrices;
  },
): Promise<number> {
  // The marker row's own id gates the increment: if a concurrent job inserted the marker first, this insert is
  // ignored, the id below never exists, and the count moves once.
  const markerId = newId("led");
  await db.batch([
    db
      .insert(ledgerEntries)
      .values({
        id: markerId,
        txId: `count:${input.attemptId}`,
        accountId: input.buyerAccountId,
        direction: "debit",
        kind: "execution_counted",
        amountMicroUsd: 0,
        capsule: input.capsule,
        projectId: input.projectId,
        attemptId: input.attemptId,
        period: periodOf(new Date()),
        createdAt: nowIso(),
      })
      .onConflictDoNothing(),
    db
      .update(capsules)
      .set({ executionCount: sql`${capsules.executionCount} + 1` })
      .where(
        and(
          eq(capsules.name, input.capsule),
          sql`EXISTS (SELECT 1 FROM ledger_entries WHERE id = ${markerId})`,
        ),
      ),
  ]);
  let total = await recordModelCharge(db, input);
  if (input.succeeded) {
    const charge = await recordExecutionCharge(db, input);
    total += charge.amountMicroUsd;
  }
  return total;
}

/** Sum of debits minus sum of credits over the whole ledger or a period: zero when every transaction balances. */
export async function ledgerImbalance(db: Database, period?: string): Promise<number> {
  const [row] = await db
    .select({
      imbalance: sql<number>`coalesce(sum(CASE WHEN ${ledgerEntries.direction} = 'debit' THEN ${ledgerEntries.amountMicroUsd} ELSE -${ledgerEntries.amountMicroUsd} END), 0)`,
    })
    .from(ledgerEntries)
    .where(period ? eq(ledgerEntries.period, period) : undefined);
  return Number(row?.imbalance ?? 0);
}

export async function adjustmentsFor(db: Database, accountId: string, period: string) {
  return db
    .select()
    .from(accountAdjustments)
    .where(and(eq(accountAdjustments.accountId, accountId), eq(accountAdjustments.period, period)))
    .orderBy(asc(accountAdjustments.createdAt));
}

export async function grantAdjustment(
  db: Database,
  actor: AuditActor,
  input: {
    accountId: string;
    period: string;
    kind: "credit" | "discount";
    amountMicroUsd: number;
    percent: number;
    reason: string;
  },
) {
  const row = { id: newId("adj"), ...input, createdAt: nowIso() };
  await db.batch([
    db.insert(accountAdjustments).values(row),
    auditStatement(db, {
      actor,
      action: "billing.adjustment_granted",
      target: `account:${input.accountId}`,
      details: {
        adjustmentId: row.id,
        period: input.period,
        kind: input.kind,
        amountMicroUsd: input.amountMicroUsd,
        percent: input.percent,
        reason: input.reason,
      },
    }),
  ]);
  await sealAuditLog(db);
  return row;
}

/** An author's earnings per month from the ledger, oldest first. */
export async function earningsByMonth(db: Database, accountId: string) {
  return db
    .select({
      period: ledgerEntries.period,
      earned: sql<number>`sum(${ledgerEntries.amountMicroUsd})`,
      executions: sql<number>`count(*)`,
    })
    .from(ledgerEntries)
    .where(and(eq(ledgerEntries.accountId, accountId), eq(ledgerEntries.kind, "author_earning")))
    .groupBy(ledgerEntries.period)
    .orderBy(asc(ledgerEntries.period));
}

/** A buyer's charges for a month from the ledger (the invoice's cross-check). */
export async function chargesFor(db: Database, accountId: string, period: string): Promise<number> {
  const [row] = await db
    .select({ total: sql<number>`coalesce(sum(${ledgerEntries.amountMicroUsd}), 0)` })
    .from(ledgerEntries)
    .where(
      and(
        eq(ledgerEntries.accountId, accountId),
        eq(ledgerEntries.period, period),
        inArray(ledgerEntries.kind, ["execution_charge", "model_charge"]),
      ),
    );
  return Number(row?.total ?? 0);
}
