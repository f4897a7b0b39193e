import type { CloudEvent } from "../events/outbox";
import type { Observation } from "./metrics";

const TERMINAL = new Set(["completed", "failed", "budget_exhausted", "cancelled"]);
const GATE_DECISIONS = new Set(["approve", "request_changes", "needs_human"]);

function finite(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** Error codes come from capsules and runners: keep the label set closed to well-formed codes. */
function codeLabel(value: unknown): string {
  return typeof value === "string" && /^[A-Z][A-Z0-9_]{0,39}$/.test(value) ? value : "OTHER";
}

/**
 * The KAMACHIQ metrics, read off the coordinator's events as the analytics consumer stores them. That consumer
 * writes each event exactly once, so counting here counts each attempt, gate decision and finished project
 * once, however often the queue redelivers.
 */
export function eventMetrics(events: CloudEvent[]): Observation[] {
  const out: Observation[] = [{ name: "analytics_events_processed_total", value: events.length }];
  for (const event of events) {
    const data = event.data;
    if (event.type === "soma.usage.tokens") {
      const failed = data.outcome === "failure";
      const seconds = finite(data.durationMs);
      if (seconds !== null) {
        out.push({
          name: "kamachiq_task_execution_duration_seconds",
          labels: {
            runtime: typeof data.runtime === "string" ? data.runtime.slice(0, 20) : "unknown",
            outcome: failed ? "failure" : "success",
          },
          value: Math.max(0, seconds / 1000),
        });
      }
      if (failed)
        out.push({
          name: "kamachiq_agent_failures_total",
          labels: { code: codeLabel(data.errorCode) },
          value: 1,
        });
    } else if (event.type === "soma.gate.scored") {
      const score = finite(data.score);
      if (score !== null)
        out.push({ name: "kamachiq_quality_score", value: Math.min(1, Math.max(0, score)) });
      if (typeof data.decision === "string" && GATE_DECISIONS.has(data.decision)) {
        out.push({ name: "kamachiq_gate_decisions_total", labels: { decision: data.decision }, value: 1 });
      }
    } else if (
      event.type.startsWith("soma.project.") &&
      TERMINAL.has(event.type.slice("soma.project.".length))
    ) {
      const budget = data.budget as { limitTokens?: unknown; spentTokens?: unknown } | undefined;
      const limit = finite(budget?.limitTokens);
      const spent = finite(budget?.spentTokens);
      if (limit !== null && limit > 0 && spent !== null) {
        out.push({
          name: "kamachiq_budget_utilization",
          labels: { status: event.type.slice("soma.project.".length) },
          value: Math.max(0, spent / limit),
        });
      }
    }
  }
  return out;
}
