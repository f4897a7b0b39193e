import { count, sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { installs, projects, submissions } from "../db/schema";
import type { GaugeFamily, SeriesSnapshot } from "./metrics";

/** Counts by a status column, as gauge samples. */
function byStatus(rows: { status: string; n: number }[]): GaugeFamily["samples"] {
  return rows.map((row) => ({ labels: { status: row.status }, value: row.n }));
}

/**
 * Metrics read from the stores at scrape time: D1 already counts projects, submissions and installs exactly
 * (rows are never deleted: removed installs keep their row), so they need no recording path of their own.
 */
export async function storeMetrics(db: Database): Promise<GaugeFamily[]> {
  const [projectRows, submissionRows, installTotals] = await db.batch([
    db.select({ status: projects.status, n: count() }).from(projects).groupBy(projects.status),
    db.select({ status: submissions.status, n: count() }).from(submissions).groupBy(submissions.status),
    db
      .select({
        total: count(),
        active: sql<number>`coalesce(sum(CASE WHEN ${installs.removedAt} IS NULL THEN 1 ELSE 0 END), 0)`,
      })
      .from(installs),
  ]);
  const total = (rows: { n: number }[]) => rows.reduce((sum, row) => sum + row.n, 0);
  return [
    {
      name: "kamachiq_projects_total",
      type: "counter",
      help: "KAMACHIQ projects created.",
      samples: [{ labels: {}, value: total(projectRows) }],
    },
    {
      name: "kamachiq_projects",
      type: "gauge",
      help: "KAMACHIQ projects by current status.",
      samples: byStatus(projectRows),
    },
    {
      name: "marketplace_submissions_total",
      type: "counter",
      help: "Capsule bundles submitted.",
      samples: [{ labels: {}, value: total(submissionRows) }],
    },
    {
      name: "marketplace_submissions",
      type: "gauge",
      help: "Submissions by current status.",
      samples: byStatus(submissionRows),
    },
    {
      name: "marketplace_installs_total",
      type: "counter",
      help: "Capsule installs made (removed ones included).",
      samples: [{ labels: {}, value: installTotals[0]?.total ?? 0 }],
    },
    {
      name: "marketplace_installs_active",
      type: "gauge",
      help: "Installs not removed.",
      samples: [{ labels: {}, value: Number(installTotals[0]?.active ?? 0) }],
    },
  ];
}

/**
 * Share of quality gate decisions that approved the output at once, over all time: the dashboard's rate over a
 * window comes from `rate(kamachiq_gate_decisions_total[...])`; this gauge is the single number the issue names.
 */
export function approvalRate(recorded: SeriesSnapshot[]): GaugeFamily {
  const decisions = recorded.filter((s) => s.name === "kamachiq_gate_decisions_total");
  const all = decisions.reduce((sum, s) => sum + s.sum, 0);
  const approved = decisions
    .filter((s) => s.labels === 'decision="approve"')
    .reduce((sum, s) => sum + s.sum, 0);
  return {
    name: "kamachiq_approval_rate",
    type: "gauge",
    help: "Share (0-1) of quality gate decisions that approved the output; NaN before the first decision.",
    samples: [{ labels: {}, value: all === 0 ? Number.NaN : approved / all }],
  };
}
