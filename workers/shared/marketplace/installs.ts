import { and, desc, eq, isNull, sql } from "drizzle-orm";
import { type Database, newId, nowIso } from "../db/client";
import { capsules, installs } from "../db/schema";
import type { CapsuleManifest } from "../domain/manifest";
import { type ResolvedPackage, resolveDependencies } from "../domain/resolve";
import { type Price, priceOfManifest, pricesAt } from "../economics/prices";
import { toMicroUsd } from "../economics/pricing";
import { AppError } from "../errors";
import { cloudEvent, outboxInsert } from "../events/outbox";
import { loadVerifiedBundle } from "./verified-bundles";
import { d1VersionSource, type VersionRow } from "./version-source";

export interface LockedPackage {
  name: string;
  version: string;
  sha256: string;
  keyid: string;
  bundleUrl: string;
  dependencies: Record<string, string>;
}

export interface InstallView {
  id: string;
  capsule: string;
  range: string;
  version: string;
  permissions: string[];
  budgetTokens: number | null;
  createdAt: string;
  lock: { packages: LockedPackage[] };
}

/**
 * Resolves a capsule's dependency tree, refuses permissions the caller did not accept, verifies every bundle's
 * digest and signature, and records the install with its lock.
 */
export async function createInstall(
  env: { BUNDLES: R2Bucket; PUBLIC_URL: string },
  db: Database,
  accountId: string,
  input: {
    capsule: string;
    range: string;
    acceptPermissions: string[];
    acceptPrices?: { capsule: string; model: string; amountUsd: number }[] | undefined;
    budgetTokens?: number | undefined;
  },
): Promise<{ install: InstallView; warnings: string[] }> {
  const { source, rows } = d1VersionSource(db);
  const resolution = await resolveDependencies(input.capsule, input.range, source);
  const chosen = resolution.packages.map((p) => rows.get(`${p.name}@${p.version}`)!);

  const required = [...new Set(chosen.flatMap((row) => row.permissions))].sort();
  const accepted = new Set(input.acceptPermissions);
  const missing = required.filter((p) => !accepted.has(p));
  if (missing.length > 0) {
    throw new AppError(
      "PERMISSIONS_NOT_ACCEPTED",
      `Accept these permissions to install: ${missing.join(", ")}`,
      {
        missing,
        byPackage: chosen
          .filter((row) => row.permissions.some((p) => missing.includes(p)))
          .map((row) => ({ name: row.name, version: row.version, permissions: row.permissions })),
      },
    );
  }

  // Paid capsules install only when the caller accepted exactly the price in force (shown in the refusal).
  const prices = new Map<string, Price>();
  const announced = await pricesAt(
    db,
    chosen.map((row) => row.name),
  );
  for (const row of chosen) {
    const price =
      announced.get(row.name) ?? priceOfManifest((row.manifest as unknown as CapsuleManifest).spec.pricing);
    if (price.model !== "free") prices.set(row.name, price);
  }
  const unaccepted = [...prices].filter(
    ([name, price]) =>
      !(input.acceptPrices ?? []).some(
        (a) =>
          a.capsule === name && a.model === price.model && toMicroUsd(a.amountUsd) === price.amountMicroUsd,
      ),
  );
  if (unaccepted.length > 0) {
    throw new AppError(
      "PRICE_NOT_ACCEPTED",
      `Accept the price of ${unaccepted.map(([n]) => n).join(", ")} to install`,
      {
        prices: unaccepted.map(([capsule, price]) => ({
          capsule,
          model: price.model,
          amountUsd: price.amountMicroUsd / 1_000_000,
        })),
      },
    );
  }

  await Promise.all(chosen.map((row) => loadVerifiedBundle(env, db, row)));

  const lock = {
    packages: resolution.packages.map((p) => ({
      ...lockEntry(env.PUBLIC_URL, p, rows),
      price: prices.has(p.name)
        ? { model: prices.get(p.name)!.model, amountUsd: prices.get(p.name)!.amountMicroUsd / 1_000_000 }
        : { model: "free", amountUsd: 0 },
    })),
  };
  const install: InstallView = {
    id: newId("ins"),
    capsule: input.capsule,
    range: input.range,
    version: resolution.root.version,
    permissions: required,
    budgetTokens: input.budgetTokens ?? null,
    createdAt: nowIso(),
    lock,
  };
  await db.batch([
    db.insert(installs).values({
      id: install.id,
      accountId,
      capsuleName: install.capsule,
      range: install.range,
      version: install.version,
      lock,
      permissions: required,
      budgetTokens: install.budgetTokens,
      createdAt: install.createdAt,
    }),
    db
      .update(capsules)
      .set({ installCount: sql`${capsules.installCount} + 1` })
      .where(eq(capsules.name, input.capsule)),
    outboxInsert(
      db,
      cloudEvent("soma.install.created", `${install.capsule}@${install.version}`, {
        installId: install.id,
        accountId,
        capsule: install.capsule,
        version: install.version,
        packages: lock.packages.length,
      }),
    ),
  ]);
  return { install, warnings: resolution.warnings };
}

function lockEntry(baseUrl: string, p: ResolvedPackage, rows: Map<string, VersionRow>): LockedPackage {
  const row = rows.get(`${p.name}@${p.version}`)!;
  return {
    name: p.name,
    version: p.version,
    sha256: row.sha256,
    keyid: row.keyid,
    bundleUrl: `${baseUrl.replace(/\/$/, "")}/v1/capsules/${p.name}/versions/${p.version}/bundle`,
    dependencies: p.resolvedDependencies,
  };
}

function installView(row: typeof installs.$inferSelect): InstallView {
  return {
    id: row.id,
    capsule: row.capsuleName,
    range: row.range,
    version: row.version,
    permissions: row.permissions,
    budgetTokens: row.budgetTokens,
    createdAt: row.createdAt,
    lock: row.lock as InstallView["lock"],
  };
}

export async function listInstalls(db: Database, accountId: string): Promise<InstallView[]> {
  const rows = await db
    .select()
    .from(installs)
    .where(and(eq(installs.accountId, accountId), isNull(installs.removedAt)))
    .orderBy(desc(installs.createdAt))
    .limit(500);
  return rows.map(installView);
}

/** Removes one of the caller's installs (kept as history, no longer listed or counted). */
export async function removeInstall(db: Database, accountId: string, id: string): Promise<void> {
  const [row] = await db
    .select()
    .from(installs)
    .where(and(eq(installs.id, id), eq(installs.accountId, accountId), isNull(installs.removedAt)))
    .limit(1);
  if (!row) throw new AppError("NOT_FOUND", `No install ${id}`);
  await db.batch([
    db.update(installs).set({ removedAt: nowIso() }).where(eq(installs.id, id)),
    db
      .update(capsules)
      .set({ installCount: sql`max(${capsules.installCount} - 1, 0)` })
      .where(eq(capsules.name, row.capsuleName)),
    outboxInsert(
      db,
      cloudEvent("soma.install.removed", `${row.capsuleName}@${row.version}`, {
        installId: id,
        accountId,
        capsule: row.capsuleName,
      }),
    ),
  ]);
}
