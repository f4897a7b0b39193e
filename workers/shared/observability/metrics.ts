import { z } from "zod";

/** Bucket bounds, in the metric's unit. Changing them for an existing metric splits its history: add, never edit. */
const LATENCY_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const LAG_SECONDS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600];
const TASK_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const RATIO = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1];

interface MetricDefinition {
  type: "counter" | "histogram";
  help: string;
  labels: readonly string[];
  buckets?: readonly number[];
}

/**
 * Metrics recorded as they happen and summed in the MetricsAggregator Durable Object. Those read from the
 * stores at scrape time (D1 counts, the approval rate) are defined in store-metrics.ts.
 */
export const RECORDED_METRICS = {
  http_requests_total: {
    type: "counter",
    help: "HTTP requests served, by route pattern, method and status.",
    labels: ["route", "method", "status"],
  },
  http_request_duration_seconds: {
    type: "histogram",
    help: "Time from request to response, by route pattern, method and status.",
    labels: ["route", "method", "status"],
    buckets: LATENCY_SECONDS,
  },
  queue_messages_total: {
    type: "counter",
    help: "Queue messages delivered to a consumer (redeliveries included), by queue.",
    labels: ["queue"],
  },
  queue_lag_seconds: {
    type: "histogram",
    help: "Time from a message being sent to its delivery to the consumer, by queue.",
    labels: ["queue"],
    buckets: LAG_SECONDS,
  },
  kamachiq_task_execution_duration_seconds: {
    type: "histogram",
    help: "Time from an attempt starting to its result being settled, by runtime and outcome.",
    labels: ["runtime", "outcome"],
    buckets: TASK_SECONDS,
  },
  kamachiq_quality_score: {
    type: "histogram",
    help: "Quality gate scores (0-1) of task outputs.",
    labels: [],
    buckets: RATIO,
  },
  kamachiq_gate_decisions_total: {
    type: "counter",
    help: "Quality gate decisions, by decision (approve, request_changes, needs_human).",
    labels: ["decision"],
  },
  kamachiq_agent_failures_total: {
    type: "counter",
    help: "Failed agent attempts, by error code.",
    labels: ["code"],
  },
  kamachiq_budget_utilization: {
    type: "histogram",
    help: "Share of its token budget a project had spent when it finished, by final status.",
    labels: ["status"],
    buckets: RATIO,
  },
  analytics_events_processed_total: {
    type: "counter",
    help: "Events written to ClickHouse by the analytics consumer (each event once).",
    labels: [],
  },
} as const satisfies Record<string, MetricDefinition>;

export type RecordedMetric = keyof typeof RECORDED_METRICS;

const metricNames = Object.keys(RECORDED_METRICS) as [RecordedMetric, ...RecordedMetric[]];

/** One measurement: a counter increment or a histogram observation. */
export const observationSchema = z
  .object({
    name: z.enum(metricNames),
    labels: z.record(z.string().regex(/^[a-z_]{1,32}$/), z.string().max(200)).default({}),
    value: z.number().finite().min(0),
  })
  .strict()
  .refine((o) => {
    const allowed: readonly string[] = RECORDED_METRICS[o.name].labels;
    return Object.keys(o.labels).every((label) => allowed.includes(label));
  }, "a label the metric does not define");
export type Observation = z.input<typeof observationSchema>;
export type ParsedObservation = z.output<typeof observationSchema>;

/** Stays below Durable Object RPC's message size with room to spare. */
export const MAX_OBSERVATIONS_PER_CALL = 500;

export function bucketsOf(name: RecordedMetric): readonly number[] | null {
  const definition: MetricDefinition = RECORDED_METRICS[name];
  return definition.buckets ?? null;
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** Labels as exposition text, sorted by name, so the same set always gives the same series key. */
export function labelText(labels: Record<string, string>): string {
  return Object.keys(labels)
    .sort()
    .map((key) => `${key}="${escapeLabelValue(labels[key] ?? "")}"`)
    .join(",");
}

/** One series as the aggregator stores it: a counter's total, or a histogram's count, sum and buckets. */
export interface SeriesSnapshot {
  name: string;
  labels: string;
  count: number;
  sum: number;
  /** Non-cumulative counts per upper bound (histograms only). */
  buckets: { le: number; count: number }[];
}

/** A metric computed at scrape time. */
export interface GaugeFamily {
  name: string;
  type: "gauge" | "counter";
  help: string;
  samples: { labels: Record<string, string>; value: number }[];
}

function number(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function seriesName(name: string, labels: string, extra?: string): string {
  const all = [labels, extra].filter((part) => part).join(",");
  return all ? `${name}{${all}}` : name;
}

/**
 * Renders the Prometheus text exposition format (version 0.0.4): every recorded metric appears with its HELP
 * and TYPE even before its first sample, so dashboards and alerts can rely on the names.
 */
export function renderPrometheus(recorded: SeriesSnapshot[], computed: GaugeFamily[]): string {
  const lines: string[] = [];
  const byName = new Map<string, SeriesSnapshot[]>();
  for (const series of recorded) {
    const list = byName.get(series.name) ?? [];
    list.push(series);
    byName.set(series.name, list);
  }
  for (const name of metricNames) {
    const definition: MetricDefinition = RECORDED_METRICS[name];
    lines.push(`# HELP ${name} ${definition.help}`, `# TYPE ${name} ${definition.type}`);
    const series = (byName.get(name) ?? []).sort((a, b) => a.labels.localeCompare(b.labels));
    for (const s of series) {
      if (definition.type === "counter") {
        lines.push(`${seriesName(name, s.labels)} ${number(s.sum)}`);
        continue;
      }
      let cumulative = 0;
      for (const le of definition.buckets ?? []) {
        cumulative += s.buckets.find((b) => b.le === le)?.count ?? 0;
        lines.push(`${seriesName(`${name}_bucket`, s.labels, `le="${number(le)}"`)} ${cumulative}`);
      }
      lines.push(`${seriesName(`${name}_bucket`, s.labels, 'le="+Inf"')} ${s.count}`);
      lines.push(`${seriesName(`${name}_sum`, s.labels)} ${number(s.sum)}`);
      lines.push(`${seriesName(`${name}_count`, s.labels)} ${s.count}`);
    }
  }
  for (const family of computed) {
    lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`);
    for (const sample of family.samples) {
      lines.push(`${seriesName(family.name, labelText(sample.labels))} ${number(sample.value)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
