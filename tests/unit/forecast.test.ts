import { describe, expect, it } from "vitest";
import { backtest, type DailyUsage, forecastDaily } from "../../workers/shared/analytics/forecast";

const DAY_MS = 86_400_000;

function addDays(day: string, days: number): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) + days * DAY_MS).toISOString().slice(0, 10);
}

/** A dense daily series from `firstDay`; `tokens(i)` is the value on day i, rounded and clamped like real counts. */
function series(firstDay: string, length: number, tokens: (i: number) => number): DailyUsage[] {
  return Array.from({ length }, (_, i) => ({
    day: addDays(firstDay, i),
    tokens: Math.max(0, Math.round(tokens(i))),
  }));
}

/** mulberry32: a tiny seeded PRNG, so the noisy series (and the assertions on them) are the same every run. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Standard normal draws by Box-Muller over the seeded generator. */
function gaussian(random: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

// 2025-01-06 is a Monday, so index i % 7 is the weekday: five busy days, then a quiet weekend.
const MONDAY = "2025-01-06";
const WEEKLY = [1, 1.05, 1.1, 1.05, 1, 0.45, 0.4];

function weekly(i: number): number {
  return WEEKLY[i % 7] ?? 1;
}

/** 120 days of a weekday/weekend pattern on a rising trend with 10% multiplicative noise. */
function noisySeasonal(seed: number): DailyUsage[] {
  const noise = gaussian(mulberry32(seed));
  return series(MONDAY, 120, (i) => (10_000 + 50 * i) * weekly(i) * (1 + 0.1 * noise()));
}

function expectWellFormed(result: ReturnType<typeof forecastDaily>): void {
  for (const d of result.daily) {
    for (const value of [d.tokens, d.low, d.high, d.spendMicroUsd]) {
      expect(Number.isInteger(value)).toBe(true);
      expect(value).toBeGreaterThanOrEqual(0);
    }
    expect(d.low).toBeLessThanOrEqual(d.tokens);
    expect(d.high).toBeGreaterThanOrEqual(d.tokens);
  }
  expect(result.totalTokens).toBe(result.daily.reduce((sum, d) => sum + d.tokens, 0));
  expect(result.recommendedBudgetTokens % 1000).toBe(0);
  expect(result.recommendedBudgetTokens).toBeGreaterThanOrEqual(
    result.daily.reduce((sum, d) => sum + d.high, 0),
  );
}

describe("forecastDaily", () => {
  it("forecasts a constant series as that constant with a zero-width interval", () => {
    const history = series("2025-03-01", 60, () => 5000);
    const result = forecastDaily(history, { horizonDays: 30, startDay: "2025-04-30" });
    expect(result.method).toBe("holt-winters-additive");
    expect(result.daily.map((d) => [d.tokens, d.low, d.high])).toEqual(
      Array.from({ length: 30 }, () => [5000, 5000, 5000]),
    );
    expect(result.totalTokens).toBe(150_000);
    expect(result.recommendedBudgetTokens).toBe(150_000);
    expect(result.fit.residualStd).toBe(0);
    expectWellFormed(result);
  });

  it("continues a linear trend", () => {
    const history = series("2025-01-01", 90, (i) => 1000 + 100 * i);
    const result = forecastDaily(history, { horizonDays: 30, startDay: "2025-04-01" });
    result.daily.forEach((d, h) => {
      expect(Math.abs(d.tokens - (1000 + 100 * (90 + h)))).toBeLessThanOrEqual(1);
    });
    expectWellFormed(result);
  });

  it("uses Holt's linear trend from a week of history and the mean below that", () => {
    const ten = series("2025-01-01", 10, (i) => 2000 + 10 * i);
    const holt = forecastDaily(ten, { horizonDays: 3, startDay: "2025-01-11" });
    expect(holt.method).toBe("holt-linear");
    expect(holt.daily.map((d) => d.tokens)).toEqual([2100, 2110, 2120]);

    const few = series("2025-01-01", 4, (i) => [100, 300, 200, 400][i] ?? 0);
    const mean = forecastDaily(few, { horizonDays: 3, startDay: "2025-01-05" });
    expect(mean.method).toBe("mean");
    expect(mean.daily.map((d) => d.tokens)).toEqual([250, 250, 250]);
    expect(mean.daily[0]?.high).toBeGreaterThan(250);
  });

  it("follows a weekday/weekend pattern on a trend", () => {
    // Weekends 5,000 tokens below the weekday level: the additive seasonality the model assumes.
    const truth = (i: number) => 8000 + 40 * i + 10_000 * (weekly(i) - 1);
    const history = series(MONDAY, 84, truth);
    const result = forecastDaily(history, { horizonDays: 14, startDay: addDays(MONDAY, 84) });
    expect(result.method).toBe("holt-winters-additive");
    result.daily.forEach((d, h) => {
      expect(Math.abs(d.tokens - truth(84 + h)) / truth(84 + h)).toBeLessThan(0.01);
    });
    // Monday (busy) against Sunday (quiet) in the forecast itself.
    expect(result.daily[0]?.tokens).toBeGreaterThan(2 * (result.daily[6]?.tokens ?? 0));
    expectWellFormed(result);
  });

  it("covers the held-out truth of noisy seasonal series with its 90% intervals on most days", () => {
    let covered = 0;
    let days = 0;
    for (let seed = 1; seed <= 10; seed++) {
      const history = noisySeasonal(seed);
      const result = forecastDaily(history.slice(0, 90), { horizonDays: 30, startDay: addDays(MONDAY, 90) });
      expectWellFormed(result);
      result.daily.forEach((d, i) => {
        const actual = history[90 + i]?.tokens ?? -1;
        if (actual >= d.low && actual <= d.high) covered++;
        days++;
      });
    }
    // Pooled over ten series: one month of one series is too few days to judge a 90% interval by.
    expect(days).toBe(300);
    expect(covered / days).toBeGreaterThanOrEqual(0.8);
  });

  it("widens the interval with the horizon", () => {
    const result = forecastDaily(noisySeasonal(4).slice(0, 90), {
      horizonDays: 28,
      startDay: addDays(MONDAY, 90),
    });
    const width = (i: number) => (result.daily[i]?.high ?? 0) - (result.daily[i]?.low ?? 0);
    // Same weekday four weeks apart, so seasonality does not confound the comparison.
    expect(width(21)).toBeGreaterThan(width(0));
  });

  it("counts missing days as zero and sums entries for the same day", () => {
    const history: DailyUsage[] = [
      { day: "2025-05-01", tokens: 400 },
      { day: "2025-05-01", tokens: 200 },
      { day: "2025-05-03", tokens: 300 },
      { day: "2025-05-05", tokens: 600 },
    ];
    const result = forecastDaily(history, { horizonDays: 2, startDay: "2025-05-06" });
    expect(result.method).toBe("mean");
    expect(result.historyDays).toBe(5);
    expect(result.daily.map((d) => d.tokens)).toEqual([300, 300]);
  });

  it("forecasts through a gap between the end of history and the start day", () => {
    const history = series("2025-01-01", 28, () => 1000);
    const result = forecastDaily(history, { horizonDays: 5, startDay: "2025-02-08" });
    expect(result.historyDays).toBe(28);
    expect(result.daily.map((d) => d.day)).toEqual([
      "2025-02-08",
      "2025-02-09",
      "2025-02-10",
      "2025-02-11",
      "2025-02-12",
    ]);
    expect(result.daily.every((d) => d.tokens === 1000)).toBe(true);
  });

  it("ignores history on or after the start day, such as today's partial total", () => {
    const history = [...series("2025-01-01", 30, () => 1000), { day: "2025-01-31", tokens: 5 }];
    const result = forecastDaily(history, { horizonDays: 1, startDay: "2025-01-31" });
    expect(result.historyDays).toBe(30);
    expect(result.daily[0]?.tokens).toBe(1000);
  });

  it("returns zeros and no budget for empty history", () => {
    const result = forecastDaily([], { horizonDays: 30, startDay: "2025-06-01" });
    expect(result.method).toBe("none");
    expect(result.daily).toHaveLength(30);
    expect(
      result.daily.every((d) => d.tokens === 0 && d.low === 0 && d.high === 0 && d.spendMicroUsd === 0),
    ).toBe(true);
    expect(result.totalTokens).toBe(0);
    expect(result.recommendedBudgetTokens).toBe(0);
  });

  it("never forecasts negative usage for a series falling towards zero", () => {
    const history = series(MONDAY, 60, (i) => (6000 - 100 * i) * weekly(i));
    const result = forecastDaily(history, { horizonDays: 30, startDay: addDays(MONDAY, 60) });
    expect(result.daily.some((d) => d.tokens === 0)).toBe(true);
    expectWellFormed(result);
  });

  it("labels UTC days across month, leap-day and year boundaries", () => {
    const history = series("2024-01-01", 30, () => 100);
    const leap = forecastDaily(history, { horizonDays: 4, startDay: "2024-02-28" });
    expect(leap.daily.map((d) => d.day)).toEqual(["2024-02-28", "2024-02-29", "2024-03-01", "2024-03-02"]);
    const yearEnd = forecastDaily(
      series("2025-11-01", 60, () => 100),
      {
        horizonDays: 30,
        startDay: "2025-12-31",
      },
    );
    expect(yearEnd.daily).toHaveLength(30);
    expect(yearEnd.daily[0]?.day).toBe("2025-12-31");
    expect(yearEnd.daily[1]?.day).toBe("2026-01-01");
    expect(yearEnd.daily[29]?.day).toBe("2026-01-29");
  });

  it("forecasts recorded spend with the token model and prices unpriced history proportionally", () => {
    const priced = series(MONDAY, 56, (i) => 10_000 * weekly(i)).map((d) => ({
      ...d,
      spendMicroUsd: d.tokens * 3,
    }));
    const model = forecastDaily(priced, { horizonDays: 7, startDay: addDays(MONDAY, 56) });
    expect(model.spendMethod).toBe("model");
    for (const d of model.daily) expect(Math.abs(d.spendMicroUsd - 3 * d.tokens)).toBeLessThanOrEqual(3);
    expect(model.totalSpendMicroUsd).toBe(model.daily.reduce((sum, d) => sum + d.spendMicroUsd, 0));

    // Only the first week carries prices (2 µUSD per token): the rest is priced at that average.
    const partly = priced.map((d, i) =>
      i < 7 ? { ...d, spendMicroUsd: d.tokens * 2 } : { day: d.day, tokens: d.tokens },
    );
    const proportional = forecastDaily(partly, { horizonDays: 7, startDay: addDays(MONDAY, 56) });
    expect(proportional.spendMethod).toBe("proportional");
    for (const d of proportional.daily)
      expect(Math.abs(d.spendMicroUsd - 2 * d.tokens)).toBeLessThanOrEqual(2);

    const unpriced = forecastDaily(
      priced.map(({ day, tokens }) => ({ day, tokens })),
      { horizonDays: 7, startDay: addDays(MONDAY, 56) },
    );
    expect(unpriced.spendMethod).toBe("none");
    expect(unpriced.totalSpendMicroUsd).toBe(0);
  });

  it("rejects malformed days and horizons", () => {
    expect(() => forecastDaily([], { horizonDays: 0, startDay: "2025-01-01" })).toThrow(RangeError);
    expect(() => forecastDaily([], { horizonDays: 30, startDay: "2025-02-30" })).toThrow(RangeError);
    expect(() =>
      forecastDaily([{ day: "1/2/2025", tokens: 1 }], { horizonDays: 1, startDay: "2025-01-03" }),
    ).toThrow(RangeError);
    expect(() =>
      forecastDaily([{ day: "2025-01-01", tokens: -1 }], { horizonDays: 1, startDay: "2025-01-03" }),
    ).toThrow(RangeError);
  });

  it("fits a year of daily history well within a request's CPU budget", () => {
    const noise = gaussian(mulberry32(9));
    const history = series(MONDAY, 365, (i) => (10_000 + 20 * i) * weekly(i) * (1 + 0.1 * noise()));
    const started = performance.now();
    const result = forecastDaily(history, { horizonDays: 30, startDay: addDays(MONDAY, 365) });
    // workerd only advances the clock across I/O, so this guards against a runaway loop, not a regression of ms.
    expect(performance.now() - started).toBeLessThan(1000);
    expect(result.method).toBe("holt-winters-additive");
  });
});

describe("backtest", () => {
  it("scores a noise-free additive weekly pattern on a trend as almost exact", () => {
    // Additive structure is what the model assumes, so anything but a near-zero error is a bug.
    const history = series(MONDAY, 120, (i) => 8000 + 40 * i + 4000 * (weekly(i) - 1));
    const result = backtest(history, { holdoutDays: 30 });
    expect(result.mape).toBeLessThan(0.01);
    expect(result.points).toBe(30);
    expect(result.holdoutDays).toBe(30);
    expect(result.method).toBe("holt-winters-additive");
  });

  it("keeps the MAPE of noisy weekly series within the 20% goal on 120 days with 30 held out", () => {
    for (let seed = 1; seed <= 10; seed++) {
      const result = backtest(noisySeasonal(seed), { holdoutDays: 30 });
      expect(result.mape).not.toBeNull();
      expect(result.mape ?? 1).toBeLessThan(0.2);
      expect(result.mae).toBeGreaterThan(0);
    }
  });

  it("leaves idle held-out days out of the MAPE but not out of the MAE", () => {
    // Usage only on weekdays: the weekends are zero and have no percentage error.
    const history = series(MONDAY, 91, (i) => (i % 7 < 5 ? 1000 : 0));
    const result = backtest(history, { holdoutDays: 28 });
    expect(result.points).toBe(20);
    expect(result.mape).toBeLessThan(0.01);
  });

  it("reports no MAPE when every held-out day is idle", () => {
    const history = [...series("2025-01-01", 30, () => 500), { day: "2025-03-01", tokens: 0 }];
    const result = backtest(history, { holdoutDays: 7 });
    expect(result.points).toBe(0);
    expect(result.mape).toBeNull();
    expect(Number.isFinite(result.mae)).toBe(true);
  });

  it("needs more history than it holds out", () => {
    expect(() =>
      backtest(
        series("2025-01-01", 30, () => 1),
        { holdoutDays: 30 },
      ),
    ).toThrow(RangeError);
    expect(() => backtest([], { holdoutDays: 30 })).toThrow(RangeError);
  });
});
