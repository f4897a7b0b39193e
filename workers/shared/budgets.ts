import type { AccountBudget, BudgetConfig, BudgetStatus } from "../../durable-objects/account-budget";
import type { Principal } from "./auth/principal";
import { findAccountByHandle } from "./db/accounts";
import type { Database } from "./db/client";
import { AppError } from "./errors";

export type BudgetScope = { kind: "account"; accountId: string } | { kind: "project"; projectId: string };

/** Reads `account`, `account:<handle>` (admins) or `project:<id>` into a scope the caller may act on. */
export async function resolveScope(
  db: Database,
  principal: Principal & { accountId: string },
  raw: string,
): Promise<BudgetScope> {
  if (raw === "account") return { kind: "account", accountId: principal.accountId };
  if (raw.startsWith("account:")) {
    const account = await findAccountByHandle(db, raw.slice("account:".length));
    if (account?.id === principal.accountId) return { kind: "account", accountId: account.id };
    if (!principal.roles.includes("admin"))
      throw new AppError("FORBIDDEN", "Only admins set other accounts' budgets");
    if (!account) throw new AppError("NOT_FOUND", `No account ${raw}`);
    return { kind: "account", accountId: account.id };
  }
  if (raw.startsWith("project:") && /^[a-f0-9]{64}$/.test(raw.slice("project:".length))) {
    return { kind: "project", projectId: raw.slice("project:".length) };
  }
  throw new AppError("VALIDATION_FAILED", "The scope is account, account:<handle> or project:<id>", {
    issues: [{ path: "scope", message: "unknown scope" }],
  });
}

export function accountBudget(
  env: { ACCOUNT_BUDGET: DurableObjectNamespace<AccountBudget> },
  accountId: string,
) {
  return env.ACCOUNT_BUDGET.get(env.ACCOUNT_BUDGET.idFromName(accountId));
}

export type { BudgetConfig, BudgetStatus };
