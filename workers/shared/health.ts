interface HealthEnv {
  DB: D1Database;
  BUNDLES: R2Bucket;
  EVENTS: Queue;
  AGENT_TASKS: Queue;
}

export interface Health {
  ok: boolean;
  checks: Record<string, { ok: boolean; error?: string }>;
}

async function probe(fn: () => Promise<unknown>): Promise<{ ok: boolean; error?: string }> {
  try {
    await fn();
    return { ok: true };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

/**
 * Checks the bindings the API depends on: a D1 query, an R2 read, and that both Queue producers are bound.
 * Queues are not sent to (a probe message would pollute the event stream).
 */
export async function checkHealth(env: HealthEnv): Promise<Health> {
  const [db, bundles] = await Promise.all([
    probe(() => env.DB.prepare("SELECT 1").first()),
    probe(() => env.BUNDLES.head("healthz")),
  ]);
  const queue = (q: Queue | undefined) =>
    typeof q?.send === "function" && typeof q.sendBatch === "function"
      ? { ok: true }
      : { ok: false, error: "not bound" };
  const checks = {
    d1: db,
    r2: bundles,
    eventsQueue: queue(env.EVENTS),
    agentTasksQueue: queue(env.AGENT_TASKS),
  };
  return { ok: Object.values(checks).every((c) => c.ok), checks };
}
