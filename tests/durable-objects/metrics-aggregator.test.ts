import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

const aggregator = (name: string) => env.METRICS_AGGREGATOR.get(env.METRICS_AGGREGATOR.idFromName(name));

describe("MetricsAggregator", () => {
  it("sums counters and histogram buckets across batches", async () => {
    const stub = aggregator("sums");
    const labels = { queue: "soma-events" };
    await stub.record([
      { name: "queue_lag_seconds", labels, value: 0.05 },
      { name: "queue_lag_seconds", labels, value: 3 },
    ]);
    await stub.record([
      { name: "queue_lag_seconds", labels, value: 5000 },
      { name: "queue_messages_total", labels, value: 1 },
      { name: "queue_messages_total", labels, value: 1 },
    ]);
    const series = await stub.snapshot();
    const lag = series.find((s) => s.name === "queue_lag_seconds");
    expect(lag).toMatchObject({ labels: 'queue="soma-events"', count: 3, sum: 5003.05 });
    // 0.05 falls in the first bucket (0.1), 3 in the 5 s bucket; 5000 s is above every bound (only +Inf).
    expect(lag?.buckets.sort((a, b) => a.le - b.le)).toEqual([
      { le: 0.1, count: 1 },
      { le: 5, count: 1 },
    ]);
    expect(series.find((s) => s.name === "queue_messages_total")).toMatchObject({ count: 2, sum: 2 });
  });

  it("rejects unknown metrics, labels a metric does not define and negative values, keeping the rest", async () => {
    const stub = aggregator("rejects");
    const result = await stub.record([
      { name: "queue_messages_total", labels: { queue: "x" }, value: 1 },
      { name: "no_such_metric" as "queue_messages_total", value: 1 },
      { name: "queue_messages_total", labels: { route: "/x" }, value: 1 },
      { name: "queue_messages_total", labels: { queue: "x" }, value: -1 },
    ]);
    expect(result).toEqual({ recorded: 1, rejected: 3 });
    expect(await stub.snapshot()).toHaveLength(1);
  });

  it("folds label sets past the cap into one overflow series", async () => {
    const stub = aggregator("cap");
    const observations = Array.from({ length: 1005 }, (_, i) => ({
      name: "kamachiq_agent_failures_total" as const,
      labels: { code: `CODE_${i}` },
      value: 1,
    }));
    for (let i = 0; i < observations.length; i += 500) await stub.record(observations.slice(i, i + 500));
    const series = (await stub.snapshot()).filter((s) => s.name === "kamachiq_agent_failures_total");
    expect(series).toHaveLength(1001);
    expect(series.find((s) => s.labels === 'overflow="true"')?.sum).toBe(5);
    expect(series.reduce((n, s) => n + s.sum, 0)).toBe(1005);
  });
});
