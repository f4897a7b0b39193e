import type { ClickHouseEnv } from "./clickhouse";
import { type Forecast, forecastDaily } from "./forecast";
import { dailyHistory, type UsageFilter } from "./queries";

/** Forecasts token use and spend for a filter from its recorded daily history, starting today (UTC). */
export async function forecastUsage(
  env: ClickHouseEnv,
  filter: UsageFilter,
  options: { horizonDays: number; historyDays: number },
): Promise<Forecast> {
  const today = new Date();
  today.setUTCHours(0, 0, 0, 0);
  const from = new Date(today.getTime() - options.historyDays * 86_400_000);
  const history = await dailyHistory(env, from, today, filter);
  // A day without rows was an idle day; anchoring yesterday keeps a quiet spell from being forecast as busy.
  const yesterday = new Date(today.getTime() - 86_400_000).toISOString().slice(0, 10);
  if (history.length > 0 && history[history.length - 1]!.day !== yesterday) {
    history.push({ day: yesterday, tokens: 0, spendMicroUsd: 0 });
  }
  return forecastDaily(history, {
    horizonDays: options.horizonDays,
    startDay: today.toISOString().slice(0, 10),
  });
}
