// Daily token and spend forecasting by exponential smoothing (Holt-Winters).
// This module has no imports on purpose: scripts/backtest.mjs loads it straight from Node with type stripping,
// which cannot resolve the extension-less relative imports the Worker code uses.

/** One recorded day: `day` is a UTC calendar date `YYYY-MM-DD`. Several entries for one day are summed. */
export interface DailyUsage {
  day: string;
  tokens: number;
  spendMicroUsd?: number | undefined;
}

export interface ForecastOptions {
  /** Days to forecast, starting at `startDay`. */
  horizonDays: number;
  /** First forecast day (UTC `YYYY-MM-DD`), normally today; history on or after it is ignored. */
  startDay: string;
  /** Seasonal period in days; 7 models the weekly cycle. */
  seasonLength?: number;
  /** Coverage of the prediction interval, e.g. 0.9 for a 90% interval. */
  confidence?: number;
}

export type ForecastMethod = "holt-winters-additive" | "holt-linear" | "mean" | "none";

export interface ForecastDay {
  day: string;
  tokens: number;
  low: number;
  high: number;
  spendMicroUsd: number;
}

/**
 * Smoothing parameters in error-correction form: level += alpha·e, trend += beta·e, season += gamma·e,
 * with the trend damped by phi per day (phi = 1 is an undamped linear trend).
 */
export interface ForecastParams {
  alpha: number;
  beta: number;
  gamma: number;
  phi: number;
  seasonLength: number;
}

export interface Forecast {
  daily: ForecastDay[];
  totalTokens: number;
  totalSpendMicroUsd: number;
  recommendedBudgetTokens: number;
  method: ForecastMethod;
  /** "model": spend forecast from recorded spend; "proportional": tokens × average price; "none": no prices. */
  spendMethod: "model" | "proportional" | "none";
  params: ForecastParams;
  /** In-sample one-step-ahead accuracy: MAPE over days with usage (null when there are none). */
  fit: { mape: number | null; residualStd: number };
  /** Days of (zero-filled) history the model was fitted on. */
  historyDays: number;
}

export interface BacktestOptions {
  holdoutDays: number;
  seasonLength?: number;
}

export interface BacktestResult {
  /** Mean absolute percentage error (0.12 = 12%) over held-out days with usage; null when all were zero. */
  mape: number | null;
  /** Mean absolute error in tokens over every held-out day. */
  mae: number;
  /** Held-out days that entered the MAPE (actual > 0). */
  points: number;
  holdoutDays: number;
  method: ForecastMethod;
}

const DAY_MS = 86_400_000;
const DAY_PATTERN = /^\d{4}-\d{2}-\d{2}$/;
// Older history adds CPU time but little accuracy for a 30-day horizon; two years keeps yearly effects visible.
const MAX_HISTORY_DAYS = 731;
const MAX_HORIZON_DAYS = 3660;
const BUDGET_ROUNDING = 1000;

const ALPHAS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9];
// Beta and gamma are searched as fractions of their admissible ranges (beta <= alpha, gamma <= 1 - alpha),
// which keeps every grid point a stable model.
const BETA_FRACTIONS = [0, 0.02, 0.05, 0.1, 0.2, 0.4];
const GAMMA_FRACTIONS = [0, 0.05, 0.1, 0.2, 0.35, 0.5];
const PHIS = [0.8, 0.9, 0.95, 0.98, 1];

function dayNumber(day: string, field: string): number {
  const ms = DAY_PATTERN.test(day) ? Date.parse(`${day}T00:00:00Z`) : Number.NaN;
  // Date.parse rolls 2025-02-30 over to March; a round trip catches it.
  if (Number.isNaN(ms) || dayLabel(ms / DAY_MS) !== day) {
    throw new RangeError(`${field} must be a calendar date YYYY-MM-DD, got ${JSON.stringify(day)}`);
  }
  return ms / DAY_MS;
}

function dayLabel(dayNo: number): string {
  return new Date(dayNo * DAY_MS).toISOString().slice(0, 10);
}

interface DenseSeries {
  firstDay: number;
  tokens: number[];
  spend: number[];
  /** Days that carried a spend figure, and their tokens, for the average price. */
  pricedTokens: number;
  pricedSpend: number;
  everyUsedDayPriced: boolean;
}

/**
 * Sums entries per day from the first to the last recorded day before `endDay`, zero-filling the days between.
 * Days after the last entry stay unknown rather than zero: the caller forecasts through them.
 */
function densify(history: readonly DailyUsage[], endDay: number): DenseSeries {
  const tokensByDay = new Map<number, number>();
  const spendByDay = new Map<number, number>();
  let pricedTokens = 0;
  let pricedSpend = 0;
  for (const [i, entry] of history.entries()) {
    const d = dayNumber(entry.day, `history[${i}].day`);
    if (!Number.isFinite(entry.tokens) || entry.tokens < 0) {
      throw new RangeError(`history[${i}].tokens must be a finite number >= 0`);
    }
    if (d >= endDay || d < endDay - MAX_HISTORY_DAYS) continue;
    tokensByDay.set(d, (tokensByDay.get(d) ?? 0) + entry.tokens);
    if (entry.spendMicroUsd !== undefined) {
      if (!Number.isFinite(entry.spendMicroUsd))
        throw new RangeError(`history[${i}].spendMicroUsd must be finite`);
      spendByDay.set(d, (spendByDay.get(d) ?? 0) + entry.spendMicroUsd);
      pricedTokens += entry.tokens;
      pricedSpend += entry.spendMicroUsd;
    }
  }
  if (tokensByDay.size === 0) {
    return { firstDay: endDay, tokens: [], spend: [], pricedTokens, pricedSpend, everyUsedDayPriced: false };
  }
  const firstDay = Math.min(...tokensByDay.keys());
  const lastDay = Math.max(...tokensByDay.keys());
  const tokens: number[] = [];
  const spend: number[] = [];
  let everyUsedDayPriced = true;
  for (let d = firstDay; d <= lastDay; d++) {
    const t = tokensByDay.get(d) ?? 0;
    tokens.push(t);
    spend.push(spendByDay.get(d) ?? 0);
    if (t > 0 && !spendByDay.has(d)) everyUsedDayPriced = false;
  }
  return { firstDay, tokens, spend, pricedTokens, pricedSpend, everyUsedDayPriced };
}

interface Model {
  method: Exclude<ForecastMethod, "none">;
  params: ForecastParams;
}

interface ModelRun {
  sse: number;
  /** Sum of the (non-negative) one-step predictions over the same days as `sse`. */
  predictedSum: number;
  /** One-step-ahead errors after the burn-in, for the residual spread and in-sample MAPE. */
  errors: number;
  absPctSum: number;
  absPctCount: number;
  /** Point forecasts for steps 1..steps after the end of the series. */
  forecast: number[];
}

/** What stays fixed while the parameters are searched: the seasonality, the burn-in and the starting state. */
interface Structure {
  seasonal: boolean;
  /** Seasonal period; 1 without seasonality. */
  m: number;
  /** Early one-step errors left out of the SSE: they mostly measure the starting state. */
  burnIn: number;
  init: InitialState;
}

// Seasons (weeks) behind the starting state of Holt-Winters, and days behind Holt's. Two seasons is the
// classical choice; in synthetic backtests 3 to 8 seasons did worse, while Holt did better on a week than on 2 days.
const INIT_SEASONS = 2;
const INIT_DAYS = 7;

function structureOf(y: readonly number[], seasonal: boolean, seasonLength: number): Structure {
  const m = seasonal ? seasonLength : 1;
  const seasons = seasonal ? Math.min(Math.floor(y.length / m), INIT_SEASONS) : Math.min(y.length, INIT_DAYS);
  return { seasonal, m, burnIn: seasonal ? m : 2, init: initialState(y, m, seasons) };
}

/**
 * Runs an additive damped-trend Holt-Winters filter (ETS(A,Ad,A) in error-correction form) over the series;
 * without seasonality it is Holt's linear method. Returns the one-step SSE after the burn-in and, when
 * `steps` > 0, the forecasts that follow the series.
 */
function runFilter(y: readonly number[], p: ForecastParams, structure: Structure, steps: number): ModelRun {
  const { seasonal, m, burnIn } = structure;
  let level = structure.init.level;
  let trend = structure.init.trend;
  const season = [...structure.init.season];
  let sse = 0;
  let predictedSum = 0;
  let errors = 0;
  let absPctSum = 0;
  let absPctCount = 0;
  for (let t = 0; t < y.length; t++) {
    const s = seasonal ? (season[t % m] ?? 0) : 0;
    const predicted = level + p.phi * trend + s;
    const actual = y[t] ?? 0;
    const e = actual - predicted;
    if (t >= burnIn) {
      sse += e * e;
      predictedSum += Math.max(predicted, 0);
      errors++;
      if (actual > 0) {
        absPctSum += Math.abs(e) / actual;
        absPctCount++;
      }
    }
    level = level + p.phi * trend + p.alpha * e;
    trend = p.phi * trend + p.beta * e;
    if (seasonal) season[t % m] = s + p.gamma * e;
  }
  const forecast: number[] = [];
  let damped = 0;
  let phiPower = 1;
  for (let h = 1; h <= steps; h++) {
    phiPower *= p.phi;
    damped += phiPower;
    const s = seasonal ? (season[(y.length + h - 1) % m] ?? 0) : 0;
    forecast.push(level + damped * trend + s);
  }
  return { sse, predictedSum, errors, absPctSum, absPctCount, forecast };
}

interface InitialState {
  level: number;
  trend: number;
  season: number[];
}

/**
 * Starting state: a least-squares line through the means of the first `seasons` seasons (for Holt, through the
 * first days) gives level and trend; the seasonal indices are the average deviations from that line.
 */
function initialState(y: readonly number[], m: number, seasons: number): InitialState {
  const means: { centre: number; mean: number }[] = [];
  for (let k = 0; k < seasons; k++) {
    let sum = 0;
    for (let i = k * m; i < (k + 1) * m; i++) sum += y[i] ?? 0;
    means.push({ centre: k * m + (m - 1) / 2, mean: sum / m });
  }
  const centreAvg = means.reduce((a, p) => a + p.centre, 0) / seasons;
  const meanAvg = means.reduce((a, p) => a + p.mean, 0) / seasons;
  let covariance = 0;
  let variance = 0;
  for (const p of means) {
    covariance += (p.centre - centreAvg) * (p.mean - meanAvg);
    variance += (p.centre - centreAvg) ** 2;
  }
  const trend = variance > 0 ? covariance / variance : 0;
  const line = (t: number) => meanAvg + trend * (t - centreAvg);
  const season: number[] = [];
  if (m > 1) {
    for (let i = 0; i < m; i++) {
      let deviation = 0;
      for (let k = 0; k < seasons; k++) deviation += (y[k * m + i] ?? 0) - line(k * m + i);
      season.push(deviation / seasons);
    }
  }
  // The filter predicts level + phi·trend (+ season) for t = 0, so the state starts one day earlier.
  return { level: line(-1), trend, season };
}

/** Grid search of the smoothing parameters minimising the one-step-ahead SSE. */
function fitModel(y: readonly number[], seasonLength: number): Model {
  const seasonal = y.length >= 2 * seasonLength;
  const method = seasonal ? "holt-winters-additive" : "holt-linear";
  const structure = structureOf(y, seasonal, seasonLength);
  const gammaFractions = seasonal ? GAMMA_FRACTIONS : [0];
  let best: ForecastParams = { alpha: 0.3, beta: 0, gamma: 0, phi: 1, seasonLength };
  let bestSse = Number.POSITIVE_INFINITY;
  for (const alpha of ALPHAS) {
    for (const bf of BETA_FRACTIONS) {
      // A flat trend does not need a damping factor; try it once.
      for (const phi of bf === 0 ? [1] : PHIS) {
        for (const gf of gammaFractions) {
          const params = { alpha, beta: alpha * bf, gamma: (1 - alpha) * gf, phi, seasonLength };
          const { sse } = runFilter(y, params, structure, 0);
          if (sse < bestSse) {
            bestSse = sse;
            best = params;
          }
        }
      }
    }
  }
  return { method, params: best };
}

/**
 * Forecast variance multiplier for step h of the innovations model: 1 + Σ_{j<h} c_j², where a shock moves the
 * forecast j steps later by c_j = alpha + beta·(phi + … + phi^j) + gamma·[j is a multiple of the season].
 */
function varianceFactors(p: ForecastParams, seasonal: boolean, steps: number): number[] {
  const factors: number[] = [];
  let sum = 1;
  let damped = 0;
  let phiPower = 1;
  for (let h = 1; h <= steps; h++) {
    factors.push(sum);
    phiPower *= p.phi;
    damped += phiPower;
    const c = p.alpha + p.beta * damped + (seasonal && h % p.seasonLength === 0 ? p.gamma : 0);
    sum += c * c;
  }
  return factors;
}

/** Evaluates a polynomial with coefficients from the highest power down (Horner). */
function horner(coefficients: readonly number[], x: number): number {
  return coefficients.reduce((acc, c) => acc * x + c, 0);
}

const QUANTILE_A = [
  -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
  2.506628277459239,
];
const QUANTILE_B = [
  -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572, 1,
];
const QUANTILE_C = [
  -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
  2.938163982698783,
];
const QUANTILE_D = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416, 1];

/** Inverse of the standard normal CDF (Acklam's rational approximation, relative error below 1.2e-9). */
function normalQuantile(p: number): number {
  const tail = (q: number) => horner(QUANTILE_C, q) / horner(QUANTILE_D, q);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return (q * horner(QUANTILE_A, r)) / horner(QUANTILE_B, r);
}

interface SeriesForecast {
  point: number[];
  sd: number[];
  mape: number | null;
  residualStd: number;
}

function forecastSeries(y: readonly number[], model: Model, steps: number): SeriesForecast {
  if (model.method === "mean") {
    const n = y.length;
    const mean = y.reduce((a, b) => a + b, 0) / n;
    const variance = n > 1 ? y.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1) : 0;
    // One day says nothing about the spread; assume it is as large as the level rather than zero.
    const residualStd = n > 1 ? Math.sqrt(variance) : Math.abs(mean);
    // The mean itself is uncertain too: Var(y - mean) = σ²(1 + 1/n), the same at every horizon.
    const sd = residualStd * Math.sqrt(1 + 1 / n);
    let absPctSum = 0;
    let absPctCount = 0;
    for (const v of y) {
      if (v > 0) {
        absPctSum += Math.abs(v - mean) / v;
        absPctCount++;
      }
    }
    return {
      point: new Array<number>(steps).fill(mean),
      sd: new Array<number>(steps).fill(sd),
      mape: absPctCount > 0 ? absPctSum / absPctCount : null,
      residualStd,
    };
  }
  const seasonal = model.method === "holt-winters-additive";
  const run = runFilter(y, model.params, structureOf(y, seasonal, model.params.seasonLength), steps);
  // In-sample errors understate out-of-sample ones by the fitted degrees of freedom: four smoothing
  // parameters plus the starting level, trend and seasonal indices.
  const fitted = 4 + 2 + (seasonal ? model.params.seasonLength - 1 : 0);
  const inflation = run.errors > fitted + 1 ? run.errors / (run.errors - fitted) : 1;
  const residualStd = run.errors > 0 ? Math.sqrt((run.sse / run.errors) * inflation) : 0;
  const factors = varianceFactors(model.params, seasonal, steps);
  // Daily usage is a sum of many requests, so its noise grows with volume: busy weekdays and a rising trend
  // vary more than quiet weekends. The one-step error variance is taken as proportional to the prediction,
  // Var = k·ŷ, with k estimated from the fit; a constant variance left intervals too narrow on busy days.
  const perUnit = run.predictedSum > 0 ? (run.sse / run.predictedSum) * inflation : 0;
  return {
    point: run.forecast,
    sd: factors.map((f, i) =>
      perUnit > 0 ? Math.sqrt(perUnit * Math.max(run.forecast[i] ?? 0, 0) * f) : residualStd * Math.sqrt(f),
    ),
    mape: run.absPctCount > 0 ? run.absPctSum / run.absPctCount : null,
    residualStd,
  };
}

function chooseModel(y: readonly number[], seasonLength: number): Model {
  if (y.length >= 7) return fitModel(y, seasonLength);
  return { method: "mean", params: { alpha: 0, beta: 0, gamma: 0, phi: 1, seasonLength } };
}

function checkOptions(horizonDays: number, seasonLength: number, confidence: number): void {
  if (!Number.isInteger(horizonDays) || horizonDays < 1 || horizonDays > MAX_HORIZON_DAYS) {
    throw new RangeError(`horizonDays must be an integer from 1 to ${MAX_HORIZON_DAYS}`);
  }
  if (!Number.isInteger(seasonLength) || seasonLength < 2 || seasonLength > 366) {
    throw new RangeError("seasonLength must be an integer from 2 to 366");
  }
  if (!(confidence > 0 && confidence < 1)) throw new RangeError("confidence must be between 0 and 1");
}

/**
 * Forecasts daily token use (and spend) for `horizonDays` days from `startDay`.
 *
 * History is summed per UTC day and zero-filled between its first and last day, so days without usage count
 * as zero; if it ends before the day before `startDay`, the days in between are forecast too (add a zero entry
 * for that day when they are known to be idle). History on or after `startDay` is ignored. The model is additive
 * Holt-Winters with a damped trend once there are two full seasons, Holt's linear (damped) trend from 7 days, the
 * mean below that, and all zeros for no history; parameters minimise the one-step-ahead squared error over a
 * small grid. Intervals are normal: the one-step error variance, fitted from the residuals, is proportional to
 * the day's forecast and grows with the horizon as the innovations model implies. Values are clamped at zero
 * and rounded to integers; spend (micro-USD) is forecast like tokens when every day with usage has a price, else
 * at the average price per token of the priced days.
 *
 * `recommendedBudgetTokens` is the sum of the daily upper bounds rounded up to the next 1,000: it covers a run
 * of high days rather than only a high total, which is the conservative choice for a hard budget.
 */
export function forecastDaily(history: readonly DailyUsage[], options: ForecastOptions): Forecast {
  const seasonLength = options.seasonLength ?? 7;
  const confidence = options.confidence ?? 0.9;
  checkOptions(options.horizonDays, seasonLength, confidence);
  const startDay = dayNumber(options.startDay, "startDay");
  const series = densify(history, startDay);
  const labels = Array.from({ length: options.horizonDays }, (_, i) => dayLabel(startDay + i));
  const flat: ForecastParams = { alpha: 0, beta: 0, gamma: 0, phi: 1, seasonLength };
  if (series.tokens.length === 0) {
    return {
      daily: labels.map((day) => ({ day, tokens: 0, low: 0, high: 0, spendMicroUsd: 0 })),
      totalTokens: 0,
      totalSpendMicroUsd: 0,
      recommendedBudgetTokens: 0,
      method: "none",
      spendMethod: "none",
      params: flat,
      fit: { mape: null, residualStd: 0 },
      historyDays: 0,
    };
  }
  // Steps from the end of history to startDay are forecast but not returned.
  const gap = startDay - (series.firstDay + series.tokens.length);
  const steps = gap + options.horizonDays;
  const model = chooseModel(series.tokens, seasonLength);
  const tokens = forecastSeries(series.tokens, model, steps);
  const z = normalQuantile(0.5 + confidence / 2);

  let spendPoint: number[];
  let spendMethod: Forecast["spendMethod"];
  if (series.everyUsedDayPriced) {
    spendPoint = forecastSeries(series.spend, model, steps).point;
    spendMethod = "model";
  } else if (series.pricedTokens > 0) {
    const price = series.pricedSpend / series.pricedTokens;
    spendPoint = tokens.point.map((t) => t * price);
    spendMethod = "proportional";
  } else {
    spendPoint = new Array<number>(steps).fill(0);
    spendMethod = "none";
  }

  const daily: ForecastDay[] = labels.map((day, i) => {
    const point = Math.max(0, tokens.point[gap + i] ?? 0);
    const sd = tokens.sd[gap + i] ?? 0;
    const rounded = Math.round(point);
    return {
      day,
      tokens: rounded,
      low: Math.min(rounded, Math.max(0, Math.floor(point - z * sd))),
      high: Math.max(rounded, Math.ceil(point + z * sd)),
      spendMicroUsd: Math.max(0, Math.round(spendPoint[gap + i] ?? 0)),
    };
  });
  const totalTokens = daily.reduce((a, d) => a + d.tokens, 0);
  const highTotal = daily.reduce((a, d) => a + d.high, 0);
  return {
    daily,
    totalTokens,
    totalSpendMicroUsd: daily.reduce((a, d) => a + d.spendMicroUsd, 0),
    recommendedBudgetTokens: Math.ceil(highTotal / BUDGET_ROUNDING) * BUDGET_ROUNDING,
    method: model.method,
    spendMethod,
    params: model.method === "mean" ? flat : model.params,
    fit: { mape: tokens.mape, residualStd: tokens.residualStd },
    historyDays: series.tokens.length,
  };
}

/**
 * Measures forecast accuracy: fits on all but the last `holdoutDays` days of the (zero-filled) history, forecasts
 * those days and compares. MAPE counts only held-out days with usage, since a percentage of zero is undefined
 * (an idle day forecast as busy still shows in the MAE). Needs more history than the holdout.
 */
export function backtest(history: readonly DailyUsage[], options: BacktestOptions): BacktestResult {
  const { holdoutDays } = options;
  if (!Number.isInteger(holdoutDays) || holdoutDays < 1)
    throw new RangeError("holdoutDays must be a positive integer");
  if (history.length === 0) throw new RangeError("backtest needs history");
  let lastDay = Number.NEGATIVE_INFINITY;
  for (const [i, entry] of history.entries())
    lastDay = Math.max(lastDay, dayNumber(entry.day, `history[${i}].day`));
  const series = densify(history, lastDay + 1);
  if (series.tokens.length <= holdoutDays) {
    throw new RangeError(
      `backtest needs more than ${holdoutDays} days of history, got ${series.tokens.length}`,
    );
  }
  const cutoff = lastDay + 1 - holdoutDays;
  // The zero entry pins the training series' end to the cutoff, so idle days just before it count as idle.
  const training = [
    ...history.filter((e) => dayNumber(e.day, "day") < cutoff),
    { day: dayLabel(cutoff - 1), tokens: 0 },
  ];
  const result = forecastDaily(training, {
    horizonDays: holdoutDays,
    startDay: dayLabel(cutoff),
    ...(options.seasonLength === undefined ? {} : { seasonLength: options.seasonLength }),
  });
  const actual = series.tokens.slice(-holdoutDays);
  let absSum = 0;
  let pctSum = 0;
  let points = 0;
  for (const [i, day] of result.daily.entries()) {
    const a = actual[i] ?? 0;
    absSum += Math.abs(day.tokens - a);
    if (a > 0) {
      pctSum += Math.abs(day.tokens - a) / a;
      points++;
    }
  }
  return {
    mape: points > 0 ? pctSum / points : null,
    mae: absSum / holdoutDays,
    points,
    holdoutDays,
    method: result.method,
  };
}
