import type { InferResponseType } from "hono/client";
import { useEffect, useRef, useState } from "preact/hooks";
import { accessToken, api, download, json, type Session } from "../api";
import { BudgetGauge, Dag, STATUS_TONE } from "../components/dag";
import {
  describeError,
  ErrorNote,
  formatDate,
  formatNumber,
  Loading,
  Scroll,
  Show,
  useAsync,
} from "../components/ui";
import { href } from "../router";

type Snapshot = InferResponseType<(typeof api.v1.projects)[":id"]["$get"], 200>["project"];
type Task = Snapshot["tasks"][number];

interface LiveEvent {
  seq: number;
  eventType: string;
  taskId: string | null;
  at: string;
}

const TERMINAL = new Set(["completed", "failed", "budget_exhausted", "cancelled"]);

/** The subprotocol the Worker answers with; the second one offered carries the access token. */
const LIVE_PROTOCOL = "soma.live.v1";

/**
 * Follows a project over its WebSocket: the first message is a snapshot, then one message per event. An event
 * says what changed, so the view re-reads the snapshot (coalesced) to stay exact; on a dropped connection it
 * reconnects from the last sequence number it saw.
 */
function useLiveProject(id: string) {
  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  const [events, setEvents] = useState<LiveEvent[]>([]);
  const [connection, setConnection] = useState<"connecting" | "live" | "closed" | "error">("connecting");
  const [error, setError] = useState<string | null>(null);
  const lastSeq = useRef(0);
  const statusRef = useRef<string>("");

  useEffect(() => {
    let socket: WebSocket | null = null;
    let stopped = false;
    let refresh: ReturnType<typeof setTimeout> | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const reread = () => {
      clearTimeout(refresh);
      refresh = setTimeout(() => {
        json(api.v1.projects[":id"].$get({ param: { id } })).then(
          ({ project }) => {
            statusRef.current = project.status;
            setSnapshot(project);
          },
          (e: unknown) => setError(describeError(e)),
        );
      }, 150);
    };
    const connect = async () => {
      const token = await accessToken();
      if (stopped || !token) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}/v1/projects/${id}/ws?after=${lastSeq.current}`, [
        LIVE_PROTOCOL,
        `soma.bearer.${token}`,
      ]);
      setConnection("connecting");
      socket.onopen = () => setConnection("live");
      socket.onmessage = (message) => {
        const data = JSON.parse(String(message.data)) as
          | { type: "snapshot"; project: Snapshot | null }
          | ({ type: "event" } & LiveEvent);
        if (data.type === "snapshot") {
          if (data.project) {
            statusRef.current = data.project.status;
            setSnapshot(data.project);
          }
          return;
        }
        lastSeq.current = Math.max(lastSeq.current, data.seq);
        setEvents((list) => [...list.slice(-199), data]);
        reread();
      };
      socket.onerror = () => setConnection("error");
      socket.onclose = () => {
        setConnection("closed");
        if (!stopped && !TERMINAL.has(statusRef.current)) retry = setTimeout(() => void connect(), 1500);
      };
    };
    void connect();
    return () => {
      stopped = true;
      clearTimeout(refresh);
      clearTimeout(retry);
      socket?.close();
    };
  }, [id]);
  return { snapshot, setSnapshot, events, connection, error };
}

function HumanReview({
  project,
  task,
  onDone,
}: {
  project: string;
  task: Task;
  onDone: (p: Snapshot) => void;
}) {
  const [feedback, setFeedback] = useState("");
  const [error, setError] = useState<string | null>(null);
  const decide = async (decision: "approve" | "reject" | "request_changes") => {
    try {
      const body = await json(
        api.v1.projects[":id"].tasks[":taskId"].review.$post({
          param: { id: project, taskId: task.id },
          json: { decision, feedback },
        }),
      );
      onDone(body.project);
    } catch (e) {
      setError(describeError(e));
    }
  };
  return (
    <div class="panel">
      <h3>Task {task.id} is waiting for you</h3>
      <p>
        The quality gate scored it {task.score?.toFixed(2) ?? "–"}, below the project's threshold. Approve it,
        or say what to change.
      </p>
      <p>
        <label for={`fb-${task.id}`}>Feedback (needed to reject or request changes)</label>
        <textarea
          id={`fb-${task.id}`}
          rows={2}
          value={feedback}
          onInput={(e) => setFeedback(e.currentTarget.value)}
        />
      </p>
      <p class="row">
        <button type="button" class="primary" onClick={() => void decide("approve")}>
          Approve
        </button>
        <button type="button" onClick={() => void decide("request_changes")}>
          Request changes
        </button>
        <button type="button" class="danger" onClick={() => void decide("reject")}>
          Reject
        </button>
      </p>
      {error && <ErrorNote message={error} />}
    </div>
  );
}

function Report({ id }: { id: string }) {
  const [report] = useAsync(() => json(api.v1.projects[":id"].report.$get({ param: { id } })), [id]);
  const [error, setError] = useState<string | null>(null);
  const get = (path: string, name: string) =>
    download(path, name).catch((e: unknown) => setError(describeError(e)));
  return (
    <section aria-labelledby="report-title">
      <h2 id="report-title">Report and artefacts</h2>
      <Show value={report} what="the report">
        {({ report: r }) => (
          <>
            <dl class="facts">
              {Object.entries(r.totals).map(([k, v]) => (
                <div key={k}>
                  <dt>{k.replace(/([A-Z])/g, " $1").toLowerCase()}</dt>
                  <dd>{formatNumber(v)}</dd>
                </div>
              ))}
            </dl>
            <p class="row">
              <button
                type="button"
                class="primary"
                onClick={() =>
                  void get(`/v1/projects/${id}/artifacts.tar.gz`, `project-${id.slice(0, 12)}.tar.gz`)
                }
              >
                Download all artefacts (.tar.gz)
              </button>
              <button
                type="button"
                onClick={() =>
                  void get(`/v1/projects/${id}/report`, `project-${id.slice(0, 12)}-report.json`)
                }
              >
                Download the report (JSON)
              </button>
            </p>
            {error && <ErrorNote message={error} />}
            <ul class="files">
              {r.artifacts.map((a) => (
                <li key={a.path}>
                  <button
                    type="button"
                    class="link mono"
                    onClick={() =>
                      void get(`/v1/projects/${id}/artifacts/${a.path}`, a.path.split("/").pop() ?? a.path)
                    }
                  >
                    {a.path}
                  </button>{" "}
                  <span class="dim small">{formatNumber(a.size)} bytes</span>
                </li>
              ))}
            </ul>
          </>
        )}
      </Show>
    </section>
  );
}

export function LivePage({ id, session }: { id: string; session: Session | null }) {
  const live = useLiveProject(id);
  if (!session) {
    return (
      <p>
        <a href={href("/signin", { next: location.hash })}>Sign in</a> to watch this project.
      </p>
    );
  }
  const p = live.snapshot;
  if (!p) return live.error ? <ErrorNote message={live.error} /> : <Loading what="the project" />;
  const finished = TERMINAL.has(p.status);
  const held = p.tasks.filter((t) => t.status === "awaiting_review");
  return (
    <>
      <p>
        <a href={href("/projects")}>← Projects</a>
      </p>
      <h1>{p.name}</h1>
      <p>
        <span
          class={`badge ${STATUS_TONE[p.status] ?? (p.status === "completed" ? "ok" : "warn")}`}
          id="project-status"
          data-status={p.status}
        >
          {p.status.replace(/_/g, " ")}
        </span>{" "}
        <span class="dim small">
          started {formatDate(p.createdAt)}
          {p.finishedAt ? `, finished ${formatDate(p.finishedAt)}` : ""} · up to {p.maxParallelAgents} agents
          in parallel · quality threshold {p.qualityThreshold}
        </span>{" "}
        <span class="small" role="status">
          {live.connection === "live"
            ? "Live"
            : live.connection === "connecting"
              ? "Connecting…"
              : finished
                ? ""
                : "Reconnecting…"}
        </span>
      </p>
      {p.failureReason && <ErrorNote message={`The project stopped: ${p.failureReason}`} />}
      {live.error && <ErrorNote message={live.error} />}
      <h2>Budget</h2>
      <BudgetGauge
        limit={p.budget.limitTokens}
        reserved={p.budget.reservedTokens}
        spent={p.budget.spentTokens}
      />
      <h2>Tasks</h2>
      <Dag tasks={p.tasks} />
      {held.map((t) => (
        <HumanReview key={t.id} project={p.id} task={t} onDone={live.setSnapshot} />
      ))}
      <Scroll label="Tasks with their gate scores">
        <table>
          <caption>Tasks with their gate scores</caption>
          <thead>
            <tr>
              <th scope="col">Task</th>
              <th scope="col">Capsule</th>
              <th scope="col">Status</th>
              <th scope="col">Gate score</th>
              <th scope="col">Attempts</th>
              <th scope="col">Tokens</th>
            </tr>
          </thead>
          <tbody>
            {p.tasks.map((t) => (
              <tr key={t.id}>
                <td class="mono">{t.id}</td>
                <td class="mono small">
                  {t.capsule}@{t.version}
                </td>
                <td>
                  {t.status.replace(/_/g, " ")}
                  {t.lastError && <span class="small bad"> ({t.lastError})</span>}
                </td>
                <td>{t.score?.toFixed(2) ?? "–"}</td>
                <td>{t.attempts}</td>
                <td>{formatNumber(t.usage.totalTokens)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Scroll>
      {finished && <Report id={p.id} />}
      <details>
        <summary>Event log ({live.events.length})</summary>
        <ol class="log">
          {live.events.map((e) => (
            <li key={e.seq}>
              <span class="mono small">#{e.seq}</span> {e.eventType}
              {e.taskId ? ` (${e.taskId})` : ""} <span class="dim small">{formatDate(e.at)}</span>
            </li>
          ))}
        </ol>
      </details>
    </>
  );
}
