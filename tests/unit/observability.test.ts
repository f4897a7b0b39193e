import { describe, expect, it } from "vitest";
import { eventMetrics } from "../../workers/shared/observability/event-metrics";
import { Logger, setDefaultLogLevel } from "../../workers/shared/observability/logger";
import { labelText, renderPrometheus } from "../../workers/shared/observability/metrics";
import {
  childSpan,
  continueTrace,
  formatTraceparent,
  parseTraceparent,
} from "../../workers/shared/observability/trace";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";

describe("traceparent", () => {
  it("reads a valid header and writes it back unchanged", () => {
    const header = `00-${TRACE}-${SPAN}-01`;
    expect(parseTraceparent(header)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true });
    expect(formatTraceparent(parseTraceparent(header)!)).toBe(header);
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-00`)?.sampled).toBe(false);
  });

  it("rejects what the spec says to ignore", () => {
    for (const bad of [
      "",
      "garbage",
      `ff-${TRACE}-${SPAN}-01`,
      `00-${"0".repeat(32)}-${SPAN}-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`,
      `00-${TRACE.toUpperCase()}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-01-extra`,
      `00-${TRACE.slice(1)}-${SPAN}-01`,
    ]) {
      expect(parseTraceparent(bad), bad).toBeNull();
    }
  });

  it("accepts a later version with more fields, keeping the four it knows", () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-01-what-comes-next`)).toMatchObject({ traceId: TRACE });
  });

  it("continues a trace with a new span whose parent is the caller's, or starts a new one", () => {
    const child = continueTrace(`00-${TRACE}-${SPAN}-01`);
    expect(child).toMatchObject({ traceId: TRACE, parentSpanId: SPAN, sampled: true });
    expect(child.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(child.spanId).not.toBe(SPAN);
    expect(childSpan(child).parentSpanId).toBe(child.spanId);
    const fresh = continueTrace(undefined);
    expect(fresh.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(fresh.parentSpanId).toBeUndefined();
  });
});

describe("Logger", () => {
  it("writes one JSON object per line with the correlation fields always present", () => {
    const lines: string[] = [];
    const log = new Logger({ requestId: "r1" }, { sink: (_level, line) => lines.push(line) });
    log.child({ traceId: TRACE, spanId: SPAN }).warn("slow", { ms: 12 });
    log.info("plain");
    log.debug("hidden below info");
    const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(first).toMatchObject({
      level: "warn",
      msg: "slow",
      requestId: "r1",
      traceId: TRACE,
      spanId: SPAN,
      ms: 12,
    });
    expect(second).toMatchObject({
      level: "info",
      msg: "plain",
      requestId: "r1",
      traceId: null,
      spanId: null,
    });
  });

  it("takes its default level from LOG_LEVEL, ignoring values that are not levels", () => {
    const lines: string[] = [];
    const sink = (_level: string, line: string) => lines.push(line);
    try {
      setDefaultLogLevel("warn");
      new Logger({}, { sink }).info("dropped");
      new Logger({}, { sink }).warn("kept");
      setDefaultLogLevel("toString");
      new Logger({}, { sink }).debug("dropped at the info default");
      new Logger({}, { sink }).info("kept at the info default");
    } finally {
      setDefaultLogLevel(undefined);
    }
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(["kept", "kept at the info default"]);
  });

  it("serialises errors and survives a field it cannot serialise", () => {
    const lines: string[] = [];
    const log = new Logger({}, { sink: (_level, line) => lines.push(line) });
    log.error("failed", { error: new TypeError("bad thing") });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    log.error("cyclic", { cyclic });
    expect(JSON.parse(lines[0]!).error).toMatchObject({ name: "TypeError", message: "bad thing" });
    expect(JSON.parse(lines[1]!)).toMatchObject({ msg: "cyclic", cyclic: "[object Object]" });
  });
});

describe("Prometheus exposition", () => {
  it("escapes label values and sorts label names", () => {
    expect(labelText({ z: "1", a: 'say "hi"\\\n' })).toBe('a="say \\"hi\\"\\\\\\n",z="1"');
  });

  it("renders cumulative buckets, +Inf, sum and count, and every metric's HELP and TYPE", () => {
    const text = renderPrometheus(
      [
        {
          name: "http_request_duration_seconds",
          labels: 'method="GET",route="/healthz",status="200"',
          count: 3,
          sum: 0.75,
          buckets: [
            { le: 0.005, count: 1 },
            { le: 0.5, count: 1 },
          ],
        },
        {
          name: "http_requests_total",
          labels: 'method="GET",route="/healthz",status="200"',
          count: 3,
          sum: 3,
          buckets: [],
        },
      ],
      [
        {
          name: "kamachiq_approval_rate",
          type: "gauge",
          help: "h",
          samples: [{ labels: {}, value: Number.NaN }],
        },
      ],
    );
    const series = 'method="GET",route="/healthz",status="200"';
    expect(text).toContain(`http_request_duration_seconds_bucket{${series},le="0.005"} 1\n`);
    expect(text).toContain(`http_request_duration_seconds_bucket{${series},le="0.25"} 1\n`);
    expect(text).toContain(`http_request_duration_seconds_bucket{${series},le="0.5"} 2\n`);
    expect(text).toContain(`http_request_duration_seconds_bucket{${series},le="10"} 2\n`);
    expect(text).toContain(`http_request_duration_seconds_bucket{${series},le="+Inf"} 3\n`);
    expect(text).toContain(`http_request_duration_seconds_sum{${series}} 0.75\n`);
    expect(text).toContain(`http_request_duration_seconds_count{${series}} 3\n`);
    expect(text).toContain(`http_requests_total{${series}} 3\n`);
    expect(text).toContain("# TYPE kamachiq_quality_score histogram\n");
    expect(text).toContain("kamachiq_approval_rate NaN\n");
    expect(text.endsWith("\n")).toBe(true);
  });
});

describe("metrics from the coordinator's events", () => {
  const event = (type: string, data: Record<string, unknown>) => ({
    specversion: "1.0" as const,
    id: `e-${type}-${Math.random()}`,
    source: "soma://kamachiq",
    type,
    time: new Date().toISOString(),
    data,
  });

  it("maps attempts, gate decisions and finished projects, and counts every event", () => {
    const observations = eventMetrics([
      event("soma.usage.tokens", { outcome: "success", runtime: "worker", durationMs: 1500 }),
      event("soma.usage.tokens", {
        outcome: "failure",
        runtime: "runner",
        durationMs: 20,
        errorCode: "TIMEOUT",
      }),
      event("soma.usage.tokens", {
        outcome: "failure",
        runtime: "worker",
        durationMs: 5,
        errorCode: "rm -rf /",
      }),
      event("soma.gate.scored", { score: 0.9, decision: "approve" }),
      event("soma.gate.scored", { score: 1.7, decision: "made-up" }),
      event("soma.project.completed", { budget: { limitTokens: 1000, spentTokens: 250 } }),
      event("soma.project.status", { status: "running" }),
      event("soma.capsule.published", {}),
    ]);
    expect(observations).toContainEqual({ name: "analytics_events_processed_total", value: 8 });
    expect(observations).toContainEqual({
      name: "kamachiq_task_execution_duration_seconds",
      labels: { runtime: "worker", outcome: "success" },
      value: 1.5,
    });
    expect(observations.filter((o) => o.name === "kamachiq_agent_failures_total")).toEqual([
      { name: "kamachiq_agent_failures_total", labels: { code: "TIMEOUT" }, value: 1 },
      { name: "kamachiq_agent_failures_total", labels: { code: "OTHER" }, value: 1 },
    ]);
    expect(observations.filter((o) => o.name === "kamachiq_quality_score").map((o) => o.value)).toEqual([
      0.9, 1,
    ]);
    expect(observations.filter((o) => o.name === "kamachiq_gate_decisions_total")).toEqual([
      { name: "kamachiq_gate_decisions_total", labels: { decision: "approve" }, value: 1 },
    ]);
    expect(observations.filter((o) => o.name === "kamachiq_budget_utilization")).toEqual([
      { name: "kamachiq_budget_utilization", labels: { status: "completed" }, value: 0.25 },
    ]);
  });
});
