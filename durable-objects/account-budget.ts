import { DurableObject } from "cloudflare:workers";
import { Logger, setDefaultLogLevel, traceFields } from "../workers/shared/observability/logger";
import { continueTrace } from "../workers/shared/observability/trace";
import { migrateAccountBudgetSchema } from "./account-budget.schema";

/** A monthly token (and optional spend) budget for one account. */
export interface BudgetConfig {
  limitTokens: number | null;
  limitMicroUsd: number | null;
  period: "month";
  softPct: number;
  hardPct: number;
  rollover: boolean;
}

export interface BudgetStatus {
  accountId: string;
  configured: boolean;
  config: BudgetConfig | null;
  period: string;
  /** This period's token limit: the configured one plus what rolled over from last period. */
  limitTokens: number | null;
  carriedTokens: number;
  spentTokens: number;
  reservedTokens: number;
  /** This period's money limit: the configured one plus what rolled over from last period. */
  limitMicroUsd: number | null;
  carriedMicroUsd: number;
  spentMicroUsd: number;
  reservedMicroUsd: number;
  alerts: { level: string; at: string }[];
}

export type ReserveResult = { ok: true } | { ok: false; reason: string };

type Row = Record<string, SqlStorageValue>;

/** Reservations nobody settled (a coordinator that lost track) are released after this long. */
const RESERVATION_TTL_MS = 30 * 60_000;

function periodOf(date: Date): string {
  return date.toISOString().slice(0, 7);
}

function previousPeriod(period: string): string {
  const [year, month] = period.split("-").map(Number) as [number, number];
  const d = new Date(Date.UTC(year, month - 2, 1));
  return periodOf(d);
}

/**
 * The budget counters of one account, so a hard limit holds exactly across every project at once: the
 * coordinator reserves a task's estimate here before dispatching it and settles the real usage after. Every
 * method is idempotent by attempt id. Crossing the soft or hard share of the limit emits one alert event per
 * period.
 */
export class AccountBudget extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    setDefaultLogLevel(env.LOG_LEVEL);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => migrateAccountBudgetSchema(ctx.storage.sql));
  }

  async configure(accountId: string, config: BudgetConfig): Promise<BudgetStatus> {
    this.sql.exec(
      `INSERT INTO config (id, account_id, limit_tokens, limit_micro_usd, period, soft_pct, hard_pct, rollover, updated_at)
       VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET account_id = excluded.account_id, limit_tokens = excluded.limit_tokens,
         limit_micro_usd = excluded.limit_micro_usd, period = excluded.period, soft_pct = excluded.soft_pct,
         hard_pct = excluded.hard_pct, rollover = excluded.rollover, updated_at = excluded.updated_at`,
      accountId,
      config.limitTokens,
      config.limitMicroUsd,
      config.period,
      config.softPct,
      config.hardPct,
      config.rollover ? 1 : 0,
      new Date().toISOString(),
    );
    return this.status(accountId);
  }

  async status(accountId: string): Promise<BudgetStatus> {
    const config = this.config();
    const period = periodOf(new Date());
    const counters = this.counters(period);
    return {
      accountId,
      configured: config !== null,
      config,
      period,
      limitTokens:
        config?.limitTokens === null || config === null ? null : config.limitTokens + counters.carried,
      carriedTokens: counters.carried,
      spentTokens: counters.spent,
      reservedTokens: counters.reserved,
      limitMicroUsd:
        config?.limitMicroUsd === null || config === null
          ? null
          : config.limitMicroUsd + counters.carriedMicroUsd,
      carriedMicroUsd: counters.carriedMicroUsd,
      spentMicroUsd: counters.spentMicroUsd,
      reservedMicroUsd: counters.reservedMicroUsd,
      alerts: this.sql
        .exec<Row>("SELECT level, at FROM alerts WHERE period = ? ORDER BY at", period)
        .toArray()
        .map((r) => ({ level: String(r.level), at: String(r.at) })),
    };
  }

  /**
   * Holds `tokens` for an attempt if the hard limit allows; a repeated call for the same attempt is a no-op.
   * `traceparent` is the caller's trace, carried into any alert this call raises.
   */
  async reserve(
    attemptId: string,
    projectId: string,
    tokens: number,
    microUsd = 0,
    traceparent?: string,
  ): Promise<ReserveResult> {
    await this.expireStale();
    if (this.row("SELECT 1 AS x FROM reservations WHERE attempt_id = ?", attemptId)) return { ok: true };
    const config = this.config();
    const period = periodOf(new Date());
    if (config) {
      const counters = this.counters(period);
      if (config.limitTokens !== null) {
        const hard = Math.floor(((config.limitTokens + counters.carried) * config.hardPct) / 100);
        if (counters.spent + counters.reserved + tokens > hard) {
          await this.alert(period, "hard", { spentTokens: counters.spent, limitTokens: hard }, traceparent);
          return {
            ok: false,
            reason: `The account's monthly token budget (${hard} tokens) would be exceeded`,
          };
        }
      }
      if (config.limitMicroUsd !== null) {
        const hardUsd = Math.floor(
          ((config.limitMicroUsd + counters.carriedMicroUsd) * config.hardPct) / 100,
        );
        if (counters.spentMicroUsd + counters.reservedMicroUsd + microUsd > hardUsd) {
          await this.alert(
            period,
            "hard",
            { spentMicroUsd: counters.spentMicroUsd, limitMicroUsd: hardUsd },
            traceparent,
          );
          return { ok: false, reason: `The account's monthly spend limit (${hardUsd} micro-USD) is reached` };
        }
      }
    }
    this.sql.exec(
      "INSERT INTO reservations (attempt_id, project_id, period, tokens, micro_usd, created_at) VALUES (?, ?, ?, ?, ?, ?)",
      attemptId,
      projectId,
      period,
      tokens,
      microUsd,
      Date.now(),
    );
    await this.scheduleExpiry();
    return { ok: true };
  }

  /** Replaces an attempt's reservation with what it really used; a second call changes nothing. */
  async settle(attemptId: string, tokens: number, microUsd = 0, traceparent?: string): Promise<void> {
    const reservation = this.row("SELECT * FROM reservations WHERE attempt_id = ?", attemptId);
    if (!reservation || Number(reservation.settled) === 1) return;
    this.sql.exec(
      "UPDATE reservations SET settled = 1, spent_tokens = ?, spent_micro_usd = ? WHERE attempt_id = ?",
      tokens,
      microUsd,
      attemptId,
    );
    const config = this.config();
    const period = String(reservation.period);
    if (!config) return;
    const counters = this.counters(period);
    // Either limit crossing its soft share raises the period's one soft alert.
    if (config.limitTokens !== null) {
      const limit = config.limitTokens + counters.carried;
      if (counters.spent >= (limit * config.softPct) / 100) {
        await this.alert(
          period,
          "soft",
          { spentTokens: counters.spent, limitTokens: limit, softPct: config.softPct },
          traceparent,
        );
      }
    }
    if (config.limitMicroUsd !== null) {
      const limit = config.limitMicroUsd + counters.carriedMicroUsd;
      if (counters.spentMicroUsd >= (limit * config.softPct) / 100) {
        await this.alert(
          period,
          "soft",
          { spentMicroUsd: counters.spentMicroUsd, limitMicroUsd: limit, softPct: config.softPct },
          traceparent,
        );
      }
    }
  }

  /** Drops an attempt's reservation without spending (cancelled, lost, or never dispatched). */
  async release(attemptId: string): Promise<void> {
    this.sql.exec("DELETE FROM reservations WHERE attempt_id = ? AND settled = 0", attemptId);
  }

  override async alarm(): Promise<void> {
    await this.expireStale();
    await this.scheduleExpiry();
  }

  private async expireStale(): Promise<void> {
    this.sql.exec(
      "DELETE FROM reservations WHERE settled = 0 AND created_at < ?",
      Date.now() - RESERVATION_TTL_MS,
    );
  }

  private async scheduleExpiry(): Promise<void> {
    const oldest = this.row("SELECT min(created_at) AS t FROM reservations WHERE settled = 0");
    if (oldest?.t !== null && oldest?.t !== undefined) {
      await this.ctx.storage.setAlarm(Number(oldest.t) + RESERVATION_TTL_MS + 1000);
    }
  }

  private config(): BudgetConfig | null {
    const row = this.row("SELECT * FROM config WHERE id = 1");
    if (!row) return null;
    return {
      limitTokens: row.limit_tokens === null ? null : Number(row.limit_tokens),
      limitMicroUsd: row.limit_micro_usd === null ? null : Number(row.limit_micro_usd),
      period: "month",
      softPct: Number(row.soft_pct),
      hardPct: Number(row.hard_pct),
      rollover: Number(row.rollover) === 1,
    };
  }

  /**
   * Spent, reserved and carried-over tokens and money of a period. With rollover, carry-over is last period's
   * unused configured limit (its own carry-over does not roll again), counted when the account used its budget
   * last period at all: the budget keeps no history of when it was configured.
   */
  private counters(period: string): {
    spent: number;
    reserved: number;
    spentMicroUsd: number;
    reservedMicroUsd: number;
    carried: number;
    carriedMicroUsd: number;
  } {
    const totals = this.row(
      `SELECT coalesce(sum(CASE WHEN settled = 1 THEN spent_tokens ELSE 0 END), 0) AS spent,
              coalesce(sum(CASE WHEN settled = 0 THEN tokens ELSE 0 END), 0) AS reserved,
              coalesce(sum(CASE WHEN settled = 1 THEN spent_micro_usd ELSE 0 END), 0) AS usd,
              coalesce(sum(CASE WHEN settled = 0 THEN micro_usd ELSE 0 END), 0) AS reserved_usd
       FROM reservations WHERE period = ?`,
      period,
    );
    const config = this.config();
    let carried = 0;
    let carriedMicroUsd = 0;
    if (config?.rollover) {
      const previous = this.row(
        `SELECT coalesce(sum(spent_tokens), 0) AS spent, coalesce(sum(spent_micro_usd), 0) AS usd, count(*) AS n
         FROM reservations WHERE period = ? AND settled = 1`,
        previousPeriod(period),
      );
      if (previous && Number(previous.n) > 0) {
        if (config.limitTokens !== null) carried = Math.max(0, config.limitTokens - Number(previous.spent));
        if (config.limitMicroUsd !== null)
          carriedMicroUsd = Math.max(0, config.limitMicroUsd - Number(previous.usd));
      }
    }
    return {
      spent: Number(totals?.spent ?? 0),
      reserved: Number(totals?.reserved ?? 0),
      spentMicroUsd: Number(totals?.usd ?? 0),
      reservedMicroUsd: Number(totals?.reserved_usd ?? 0),
      carried,
      carriedMicroUsd,
    };
  }

  private async alert(
    period: string,
    level: "soft" | "hard",
    data: Record<string, number>,
    traceparent: string | undefined,
  ): Promise<void> {
    const at = new Date().toISOString();
    const inserted = this.sql
      .exec(
        "INSERT OR IGNORE INTO alerts (period, level, at) VALUES (?, ?, ?) RETURNING level",
        period,
        level,
        at,
      )
      .toArray();
    if (inserted.length === 0) return;
    const accountId = String(this.row("SELECT account_id FROM config WHERE id = 1")?.account_id ?? "");
    try {
      await this.env.EVENTS.send(
        {
          specversion: "1.0",
          id: `budget:${accountId}:${period}:${level}`,
          source: "soma://budgets",
          type: "soma.budget.threshold",
          time: at,
          subject: `account/${accountId}`,
          datacontenttype: "application/json",
          data: { accountId, period, level, ...data },
          ...(traceparent ? { traceparent } : {}),
        },
        { contentType: "json" },
      );
    } catch (error) {
      // The alert row stays; the event id is stable, so a later crossing in another period is unaffected.
      new Logger({
        component: "AccountBudget",
        requestId: `budget:${accountId}:${period}:${level}`,
        ...traceFields(continueTrace(traceparent)),
      }).error("budget alert send failed", { error });
    }
  }

  private row(query: string, ...bindings: unknown[]): Row | null {
    return this.sql.exec<Row>(query, ...bindings).toArray()[0] ?? null;
  }
}
