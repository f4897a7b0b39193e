/** The parts of a task the graph needs. */
export interface DagTask {
  id: string;
  status: string;
  dependsOn: string[];
  score: number | null;
}

const NODE_W = 132;
const NODE_H = 44;
const GAP_X = 48;
const GAP_Y = 14;

/** Columns by longest path from a root, so every edge points right. */
export function layers(tasks: DagTask[]): Map<string, number> {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const depth = new Map<string, number>();
  const visit = (id: string, trail: Set<string>): number => {
    const known = depth.get(id);
    if (known !== undefined) return known;
    const task = byId.get(id);
    let d = 0;
    for (const dep of task?.dependsOn ?? []) {
      if (byId.has(dep) && !trail.has(dep)) d = Math.max(d, visit(dep, new Set([...trail, dep])) + 1);
    }
    depth.set(id, d);
    return d;
  };
  for (const t of tasks) visit(t.id, new Set([t.id]));
  return depth;
}

export const STATUS_TONE: Record<string, string> = {
  completed: "ok",
  running: "run",
  queued: "run",
  ready: "wait",
  pending: "wait",
  retry_wait: "warn",
  awaiting_review: "warn",
  failed: "bad",
  skipped: "dim",
  cancelled: "dim",
};

/** The task graph as SVG; the table beside it carries the same facts for screen readers. */
export function Dag({ tasks }: { tasks: DagTask[] }) {
  const depth = layers(tasks);
  const columns: DagTask[][] = [];
  for (const t of tasks) {
    const c = depth.get(t.id) ?? 0;
    columns[c] = [...(columns[c] ?? []), t];
  }
  const pos = new Map<string, { x: number; y: number }>();
  for (const [c, column] of columns.entries()) {
    for (const [r, t] of (column ?? []).entries()) {
      pos.set(t.id, { x: c * (NODE_W + GAP_X), y: r * (NODE_H + GAP_Y) });
    }
  }
  const width = Math.max(1, columns.length) * (NODE_W + GAP_X) - GAP_X;
  const height = Math.max(1, ...columns.map((c) => c.length)) * (NODE_H + GAP_Y) - GAP_Y;
  const done = tasks.filter((t) => t.status === "completed").length;
  return (
    <div class="dag-wrap">
      <svg
        class="dag"
        viewBox={`-2 -2 ${width + 4} ${height + 4}`}
        width={width + 4}
        height={height + 4}
        role="img"
        aria-label={`Task graph: ${tasks.length} tasks, ${done} completed`}
      >
        {tasks.flatMap((t) =>
          t.dependsOn.map((dep) => {
            const from = pos.get(dep);
            const to = pos.get(t.id);
            if (!from || !to) return null;
            const x1 = from.x + NODE_W;
            const y1 = from.y + NODE_H / 2;
            const x2 = to.x;
            const y2 = to.y + NODE_H / 2;
            const mid = (x1 + x2) / 2;
            return (
              <path
                key={`${dep}-${t.id}`}
                class="edge"
                d={`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`}
              />
            );
          }),
        )}
        {tasks.map((t) => {
          const p = pos.get(t.id) ?? { x: 0, y: 0 };
          return (
            <g
              key={t.id}
              class={`node ${STATUS_TONE[t.status] ?? ""}`}
              transform={`translate(${p.x},${p.y})`}
              data-task={t.id}
              data-status={t.status}
            >
              <rect width={NODE_W} height={NODE_H} rx={6} />
              <text x={8} y={18}>
                {t.id.length > 16 ? `${t.id.slice(0, 15)}…` : t.id}
              </text>
              <text x={8} y={34} class="sub">
                {t.status.replace(/_/g, " ")}
                {t.score !== null ? ` · ${t.score.toFixed(2)}` : ""}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}

/** Spent, reserved and the limit on one bar, with the numbers in words beside it. */
export function BudgetGauge({ limit, reserved, spent }: { limit: number; reserved: number; spent: number }) {
  const pct = (n: number) => (limit > 0 ? Math.min(100, (n / limit) * 100) : 0);
  const fmt = (n: number) => new Intl.NumberFormat("en").format(n);
  return (
    <figure class="gauge">
      {/* biome-ignore lint/a11y/useSemanticElements: a native <meter> cannot draw spent and reserved side by side */}
      <div
        class="gauge-bar"
        role="meter"
        aria-valuemin={0}
        aria-valuemax={limit}
        aria-valuenow={spent}
        aria-label="Token budget used"
        aria-valuetext={`${fmt(spent)} spent and ${fmt(reserved)} reserved of ${fmt(limit)} tokens`}
      >
        <span class="spent" style={{ width: `${pct(spent)}%` }} />
        <span class="reserved" style={{ width: `${Math.max(0, pct(spent + reserved) - pct(spent))}%` }} />
      </div>
      <figcaption>
        <span class="key spent" /> {fmt(spent)} spent · <span class="key reserved" /> {fmt(reserved)} reserved
        · limit {fmt(limit)} tokens ({fmt(Math.max(0, limit - spent - reserved))} free)
      </figcaption>
    </figure>
  );
}
