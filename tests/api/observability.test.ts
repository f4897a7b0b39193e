import { env } from "cloudflare:workers";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { stringify } from "yaml";
import { api, manifest, publish, type SubmissionBody, signup, tarGz, upload } from "../helpers";
import { createProject, publishReviewer, publishWorker, waitForStatus } from "../kamachiq-helpers";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_SPAN}-01`;

/** Series name (with labels, as exposed) to value. */
async function scrape(): Promise<Map<string, number>> {
  const res = await api("/metrics", { token: env.SOMA_ADMIN_TOKEN });
  expect(res.status).toBe(200);
  const values = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    values.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return values;
}

const value = (metrics: Map<string, number>, series: string): number => metrics.get(series) ?? 0;

/** Sum of every series of a metric whose labels contain all of `having`. */
function total(metrics: Map<string, number>, name: string, having: string[] = []): number {
  let sum = 0;
  for (const [series, v] of metrics) {
    const base = series.split("{")[0];
    if (base === name && having.every((label) => series.includes(label))) sum += v;
  }
  return sum;
}

async function until(check: (m: Map<string, number>) => boolean, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last = await scrape();
  while (!check(last)) {
    if (Date.now() > deadline) throw new Error("metrics never reached the expected values");
    await new Promise((r) => setTimeout(r, 250));
    last = await scrape();
  }
  return last;
}

/** JSON log lines written while `fn` runs (the Worker, its consumers and objects log to this isolate). */
function captureLogs() {
  const lines: Record<string, unknown>[] = [];
  const keep = (...args: unknown[]) => {
    for (const arg of args) {
      if (typeof arg !== "string" || !arg.startsWith("{")) continue;
      try {
        lines.push(JSON.parse(arg) as Record<string, unknown>);
      } catch {
        // not one of ours
      }
    }
  };
  vi.spyOn(console, "log").mockImplementation(keep);
  vi.spyOn(console, "warn").mockImplementation(keep);
  vi.spyOn(console, "error").mockImplementation(keep);
  return lines;
}

afterEach(() => {
  vi.restoreAllMocks();
});

let owner: Awaited<ReturnType<typeof signup>>;

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
});

/** Publishes a runner capsule of `owner`: its task waits for a runner to claim it, so the project stays running. */
async function publishRunner(name: string): Promise<void> {
  const doc = manifest({ name: `${owner.handle}/${name}`, runtime: "runner", permissions: ["runner.exec"] });
  (doc.spec as Record<string, unknown>).entrypoint = "run.sh";
  const uploaded = await upload(
    owner.apiKey,
    await tarGz([
      { name: "capsule.yaml", body: stringify(doc) },
      { name: "run.sh", body: "echo ok\n" },
    ]),
  );
  const { submission } = (await uploaded.json()) as SubmissionBody;
  const decided = await api(`/v1/submissions/${submission.id}/decision`, {
    method: "POST",
    token: env.SOMA_ADMIN_TOKEN,
    json: { decision: "approve" },
  });
  expect(decided.status).toBe(200);
}

describe("traces and logs", () => {
  it("carries a request's traceparent on the outbox events it writes, to the analytics consumer", async () => {
    const user = await signup();
    const lines = captureLogs();
    // A role change is recorded through the outbox (soma.account.roles_changed).
    const res = await api(`/v1/accounts/${user.handle}/roles`, {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      headers: { traceparent: TRACEPARENT },
      json: { roles: ["user", "reviewer"] },
    });
    expect(res.status).toBe(200);
    const deadline = Date.now() + 15_000;
    const stored = () =>
      lines.find((l) => l.msg === "events stored" && l.component === "consumer" && l.traceId === TRACE_ID);
    while (!stored() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(stored()).toMatchObject({ level: "info", traceId: TRACE_ID });
    // The consumer's span continues the request's span, not the caller's.
    const request = lines.find((l) => l.msg === "request" && l.traceId === TRACE_ID);
    expect(stored()?.parentSpanId).toBe(request?.spanId);
  });

  it("continues the caller's traceparent with a new span, and starts a trace when there is none or it is invalid", async () => {
    const traced = await api("/healthz", { headers: { traceparent: TRACEPARENT } });
    const echoed = traced.headers.get("traceparent") ?? "";
    expect(echoed).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`));
    expect(echoed).not.toContain(PARENT_SPAN);

    for (const header of [undefined, "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "garbage"]) {
      const res = await api("/healthz", { headers: header ? { traceparent: header } : {} });
      const fresh = res.headers.get("traceparent") ?? "";
      expect(fresh).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(fresh).not.toContain("0".repeat(32));
    }
  });

  it("writes one JSON access-log line per request with the route pattern, status, duration, request id and trace", async () => {
    const lines = captureLogs();
    const res = await api("/v1/capsules/nobody/nothing", {
      headers: { traceparent: TRACEPARENT, "x-request-id": "req-observability-1" },
    });
    expect(res.status).toBe(404);
    const access = lines.filter((l) => l.msg === "request" && l.requestId === "req-observability-1");
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({
      level: "info",
      method: "GET",
      route: "/v1/capsules/:ns/:name",
      status: 404,
      traceId: TRACE_ID,
      parentSpanId: PARENT_SPAN,
    });
    expect(access[0]?.spanId).toBe(res.headers.get("traceparent")?.split("-")[2]);
    expect(typeof access[0]?.durationMs).toBe("number");
    expect(typeof access[0]?.time).toBe("string");
  });

  it("carries the traceparent of POST /v1/projects to the agent consumer's logs and to the runner job", async () => {
    await publishRunner("traced-runner");

    const lines = captureLogs();
    const created = await api("/v1/projects", {
      method: "POST",
      token: owner.apiKey,
      headers: { traceparent: TRACEPARENT },
      json: {
        name: "traced",
        spec: {
          tasks: [{ id: "run", capsule: `${owner.handle}/traced-runner` }],
          acceptPermissions: ["runner.exec"],
        },
        budget: { tokens: 100_000 },
      },
    });
    expect(created.status).toBe(201);
    const projectId = ((await created.json()) as { project: { id: string } }).project.id;

    interface ClaimedJob {
      traceparent?: string;
      projectId: string;
    }
    let job: ClaimedJob | null = null as ClaimedJob | null;
    const deadline = Date.now() + 20_000;
    while (!job) {
      const res = await api("/v1/runners/claim", {
        method: "POST",
        token: owner.apiKey,
        json: { runnerId: "trace-runner", waitSeconds: 0 },
      });
      if (res.status === 200) job = ((await res.json()) as { job: ClaimedJob }).job;
      else if (Date.now() > deadline) throw new Error(`no job: ${res.status}`);
      else await new Promise((r) => setTimeout(r, 200));
    }
    expect(job?.projectId).toBe(projectId);
    expect(job?.traceparent).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`));

    const consumer = lines.find((l) => l.msg === "runner job queued" && l.projectId === projectId);
    expect(consumer).toMatchObject({ component: "consumer", traceId: TRACE_ID, level: "info" });
    // The runner job continues the consumer's span, so the two join into one trace tree.
    expect(job?.traceparent?.split("-")[2]).toBe(consumer?.spanId);
  });
  it("logs what a project's object did for a budget change or a cancel on the trace of the request that asked", async () => {
    await publishRunner("traced-cancel");
    const created = await createProject(owner.apiKey, {
      name: "traced-cancel",
      spec: {
        tasks: [{ id: "run", capsule: `${owner.handle}/traced-cancel` }],
        acceptPermissions: ["runner.exec"],
      },
      budget: { tokens: 100_000 },
    });
    expect(created.status).toBe(201);
    const projectId = ((await created.json()) as { project: { id: string } }).project.id;

    const cancelledBefore = value(await scrape(), 'kamachiq_budget_utilization_count{status="cancelled"}');
    const lines = captureLogs();
    const budget = await api(`/v1/budgets/project:${projectId}`, {
      method: "PUT",
      token: owner.apiKey,
      headers: { traceparent: TRACEPARENT },
      json: { limitTokens: 90_000, softPct: 50 },
    });
    expect(budget.status).toBe(200);
    const cancelled = await api(`/v1/projects/${projectId}/cancel`, {
      method: "POST",
      token: owner.apiKey,
      headers: { traceparent: TRACEPARENT },
    });
    expect(cancelled.status).toBe(200);

    for (const [res, msg] of [
      [budget, "budget changed"],
      [cancelled, "project cancelled"],
    ] as const) {
      const line = lines.find((l) => l.msg === msg && l.projectId === projectId);
      // A child span of the request's own span: the access-log line and the object's line join in one tree.
      expect(line).toMatchObject({ component: "ProjectCoordinator", traceId: TRACE_ID, level: "info" });
      expect(line?.parentSpanId).toBe(res.headers.get("traceparent")?.split("-")[2]);
    }
    // The cancelled project's metrics land before the next test counts its own.
    await until(
      (m) => value(m, 'kamachiq_budget_utilization_count{status="cancelled"}') === cancelledBefore + 1,
    );
  });
});

describe("GET /metrics", () => {
  it("needs the scrape token or the admin token", async () => {
    expect((await api("/metrics")).status).toBe(401);
    expect((await api("/metrics", { token: "not-the-metrics-token-at-all" })).status).toBe(401);
    expect((await api("/metrics", { token: owner.apiKey })).status).toBe(401);
    const body = (await (await api("/metrics")).json()) as { error: { code: string } };
    expect(body.error.code).toBe("UNAUTHENTICATED");
    const scoped = await api("/metrics", { token: env.METRICS_TOKEN });
    expect(scoped.status).toBe(200);
    expect(scoped.headers.get("content-type")).toContain("text/plain; version=0.0.4");
    const text = await scoped.text();
    for (const name of [
      "http_requests_total",
      "http_request_duration_seconds",
      "queue_lag_seconds",
      "kamachiq_projects_total",
      "kamachiq_task_execution_duration_seconds",
      "kamachiq_budget_utilization",
      "kamachiq_quality_score",
      "kamachiq_approval_rate",
      "kamachiq_agent_failures_total",
      "marketplace_submissions_total",
      "marketplace_installs_total",
      "analytics_events_processed_total",
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
  });

  it("counts requests by route pattern, method and status, with a latency histogram", async () => {
    const series = 'method="GET",route="/v1/capsules/:ns/:name",status="404"';
    const before = await scrape();
    for (const name of ["a", "b", "c"]) expect((await api(`/v1/capsules/nobody/${name}`)).status).toBe(404);
    const after = await scrape();
    expect(
      value(after, `http_requests_total{${series}}`) - value(before, `http_requests_total{${series}}`),
    ).toBe(3);
    const count = `http_request_duration_seconds_count{${series}}`;
    expect(value(after, count) - value(before, count)).toBe(3);
    const inf = `http_request_duration_seconds_bucket{${series},le="+Inf"}`;
    expect(value(after, inf) - value(before, inf)).toBe(3);
    // Buckets are cumulative: the largest finite bound holds at most the +Inf count.
    expect(value(after, `http_request_duration_seconds_bucket{${series},le="10"}`)).toBeLessThanOrEqual(
      value(after, inf),
    );
    // Raw paths never become label values.
    expect([...after.keys()].some((k) => k.includes("/v1/capsules/nobody/"))).toBe(false);
  });

  it("counts submissions and installs from D1", async () => {
    const before = await scrape();
    const author = await signup();
    await publish(author.apiKey, { name: `${author.handle}/counted` });
    await publish(author.apiKey, { name: `${author.handle}/counted-too` });
    const installed = await api("/v1/installs", {
      method: "POST",
      token: author.apiKey,
      json: { capsule: `${author.handle}/counted`, range: "^1.0.0", acceptPermissions: ["artifacts.read"] },
    });
    expect(installed.status, await installed.clone().text()).toBe(201);
    const after = await scrape();
    expect(
      value(after, "marketplace_submissions_total") - value(before, "marketplace_submissions_total"),
    ).toBe(2);
    expect(value(after, "marketplace_installs_total") - value(before, "marketplace_installs_total")).toBe(1);
  });

  it("records queue lag, task durations, gate scores, approvals, failures and budget use from real projects", async () => {
    await publishWorker(
      owner.apiKey,
      `${owner.handle}/fine`,
      "export default { async run() { return { ok: true }; } };\n",
    );
    await publishWorker(
      owner.apiKey,
      `${owner.handle}/broken`,
      'export default { async run() { throw new Error("broken on purpose"); } };\n',
    );
    const before = await scrape();
    const start = async (capsule: string) => {
      const res = await createProject(owner.apiKey, {
        name: capsule,
        spec: { tasks: [{ id: "only", capsule: `${owner.handle}/${capsule}` }] },
        budget: { tokens: 100_000 },
      });
      expect(res.status, await res.clone().text()).toBe(201);
      return ((await res.json()) as { project: { id: string } }).project.id;
    };
    const good = await waitForStatus(owner.apiKey, await start("fine"), ["completed", "failed"]);
    const bad = await waitForStatus(owner.apiKey, await start("broken"), ["completed", "failed"]);
    expect(good.status).toBe("completed");
    expect(bad.status).toBe("failed");
    const failedAttempts = bad.tasks[0]?.attempts ?? 0;
    expect(failedAttempts).toBeGreaterThan(0);

    const durations = "kamachiq_task_execution_duration_seconds_count";
    const after = await until(
      (m) =>
        total(m, durations) - total(before, durations) === 1 + failedAttempts &&
        total(m, "kamachiq_budget_utilization_count") - total(before, "kamachiq_budget_utilization_count") ===
          2,
    );
    expect(
      total(after, durations, ['outcome="success"', 'runtime="worker"']) -
        total(before, durations, ['outcome="success"']),
    ).toBe(1);
    expect(
      total(after, "kamachiq_agent_failures_total") - total(before, "kamachiq_agent_failures_total"),
    ).toBe(failedAttempts);
    expect(total(after, "kamachiq_quality_score_count") - total(before, "kamachiq_quality_score_count")).toBe(
      1,
    );
    expect(
      value(after, 'kamachiq_gate_decisions_total{decision="approve"}') -
        value(before, 'kamachiq_gate_decisions_total{decision="approve"}'),
    ).toBe(1);
    const rate = value(after, "kamachiq_approval_rate");
    expect(rate).toBeGreaterThan(0);
    expect(rate).toBeLessThanOrEqual(1);
    expect(
      value(after, 'kamachiq_budget_utilization_count{status="completed"}') -
        value(before, 'kamachiq_budget_utilization_count{status="completed"}'),
    ).toBe(1);
    expect(value(after, "kamachiq_projects_total") - value(before, "kamachiq_projects_total")).toBe(2);
    expect(
      value(after, 'queue_messages_total{queue="soma-agent-tasks"}') -
        value(before, 'queue_messages_total{queue="soma-agent-tasks"}'),
    ).toBeGreaterThanOrEqual(1 + failedAttempts);
    expect(value(after, 'queue_lag_seconds_count{queue="soma-agent-tasks"}')).toBe(
      value(after, 'queue_messages_total{queue="soma-agent-tasks"}'),
    );
    expect(value(after, "analytics_events_processed_total")).toBeGreaterThan(
      value(before, "analytics_events_processed_total"),
    );
  });
});
