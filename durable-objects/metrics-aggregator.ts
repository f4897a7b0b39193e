import { DurableObject } from "cloudflare:workers";
import { Logger, setDefaultLogLevel } from "../workers/shared/observability/logger";
import {
  bucketsOf,
  labelText,
  MAX_OBSERVATIONS_PER_CALL,
  type Observation,
  observationSchema,
  type ParsedObservation,
  type SeriesSnapshot,
} from "../workers/shared/observability/metrics";
import { migrateMetricsAggregatorSchema } from "./metrics-aggregator.schema";

/** Past this many label sets, a metric's new series fold into one `overflow="true"` series (cardinality cap). */
const MAX_SERIES_PER_METRIC = 1000;

/**
 * The platform's recorded metrics, summed across every isolate: Workers keep no state between requests, so each
 * one sends its observations here (in small batches, after the response) and `GET /metrics` reads the totals.
 * Counters and histograms only ever add, so a batch that arrives twice over-counts by that batch and nothing
 * else breaks; a batch lost with an isolate under-counts. Both are the usual trade of a metrics pipeline.
 */
export class MetricsAggregator extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly log = new Logger({ component: "MetricsAggregator" });

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    setDefaultLogLevel(env.LOG_LEVEL);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => migrateMetricsAggregatorSchema(ctx.storage.sql));
  }

  /** Adds a batch of observations; invalid ones are dropped and counted in the answer. */
  async record(observations: Observation[]): Promise<{ recorded: number; rejected: number }> {
    let recorded = 0;
    let rejected = 0;
    const valid: ParsedObservation[] = [];
    for (const raw of observations.slice(0, MAX_OBSERVATIONS_PER_CALL)) {
      const parsed = observationSchema.safeParse(raw);
      if (parsed.success) valid.push(parsed.data);
      else rejected++;
    }
    rejected += Math.max(0, observations.length - MAX_OBSERVATIONS_PER_CALL);
    // One upsert per series and bucket of the batch, not per observation: a batch is mostly a few busy routes.
    const totals = new Map<
      string,
      {
        name: ParsedObservation["name"];
        labels: string;
        count: number;
        sum: number;
        buckets: Map<number, number>;
      }
    >();
    for (const observation of valid) {
      const labels = labelText(observation.labels);
      const key = `${observation.name}\n${labels}`;
      let total = totals.get(key);
      if (!total) {
        total = { name: observation.name, labels, count: 0, sum: 0, buckets: new Map() };
        totals.set(key, total);
      }
      total.count += 1;
      total.sum += observation.value;
      const le = bucketsOf(observation.name)?.find((bound) => observation.value <= bound);
      if (le !== undefined) total.buckets.set(le, (total.buckets.get(le) ?? 0) + 1);
      recorded++;
    }
    this.ctx.storage.transactionSync(() => {
      for (const total of totals.values()) {
        const labels = this.seriesKey(total.name, total.labels);
        this.sql.exec(
          `INSERT INTO series (name, labels, count, sum) VALUES (?, ?, ?, ?)
           ON CONFLICT (name, labels) DO UPDATE SET count = count + excluded.count, sum = sum + excluded.sum`,
          total.name,
          labels,
          total.count,
          total.sum,
        );
        for (const [le, count] of total.buckets) {
          this.sql.exec(
            `INSERT INTO buckets (name, labels, le, count) VALUES (?, ?, ?, ?)
             ON CONFLICT (name, labels, le) DO UPDATE SET count = count + excluded.count`,
            total.name,
            labels,
            le,
            count,
          );
        }
      }
    });
    if (rejected > 0) this.log.warn("observations rejected", { rejected, recorded });
    return { recorded, rejected };
  }

  /** Every series with its buckets. */
  async snapshot(): Promise<SeriesSnapshot[]> {
    const series = new Map<string, SeriesSnapshot>();
    for (const row of this.sql.exec<{ name: string; labels: string; count: number; sum: number }>(
      "SELECT name, labels, count, sum FROM series ORDER BY name, labels",
    )) {
      series.set(`${row.name}\n${row.labels}`, { ...row, buckets: [] });
    }
    for (const row of this.sql.exec<{ name: string; labels: string; le: number; count: number }>(
      "SELECT name, labels, le, count FROM buckets",
    )) {
      series.get(`${row.name}\n${row.labels}`)?.buckets.push({ le: row.le, count: row.count });
    }
    return [...series.values()];
  }

  private seriesKey(name: string, labels: string): string {
    const known = this.sql
      .exec<{ n: number }>("SELECT count(*) AS n FROM series WHERE name = ? AND labels = ?", name, labels)
      .one().n;
    if (known > 0) return labels;
    const distinct = this.sql
      .exec<{ n: number }>("SELECT count(*) AS n FROM series WHERE name = ?", name)
      .one().n;
    return distinct >= MAX_SERIES_PER_METRIC ? 'overflow="true"' : labels;
  }
}
