import type { InferResponseType } from "hono/client";
import { useState } from "preact/hooks";
import { api, json, raw, type Session } from "../api";
import {
  describeError,
  Empty,
  ErrorNote,
  formatDate,
  formatUsd,
  Scroll,
  Show,
  useAsync,
} from "../components/ui";
import { lazyPage } from "../lazy";
import { href, navigate } from "../router";

// The editor brings a YAML parser and a JSON Schema validator: loaded only when someone opens it.
const ManifestEditor = lazyPage(() => import("./manifest-editor").then((m) => m.ManifestEditor));

export type Submission = InferResponseType<typeof api.v1.submissions.$get, 200>["items"][number];

const STATUS_WORDS: Record<string, string> = {
  pending_review: "Waiting for a reviewer",
  approved: "Approved, publishing",
  published: "Published",
  rejected: "Rejected",
  changes_requested: "Changes requested",
};

export function statusBadge(status: string) {
  const tone =
    status === "published" || status === "approved" ? "ok" : status === "rejected" ? "bad" : "warn";
  return <span class={`badge ${tone}`}>{STATUS_WORDS[status] ?? status}</span>;
}

export function Findings({ findings }: { findings: Submission["findings"] }) {
  if (findings.length === 0) return <p>The automated checks found nothing to flag.</p>;
  return (
    <Scroll label="Findings of the automated checks">
      <table>
        <caption>Findings of the automated checks</caption>
        <thead>
          <tr>
            <th scope="col">Severity</th>
            <th scope="col">Finding</th>
            <th scope="col">Where</th>
            <th scope="col">Weight</th>
          </tr>
        </thead>
        <tbody>
          {findings.map((f) => (
            <tr key={`${f.id}-${f.file ?? ""}-${f.line ?? ""}`}>
              <td>
                <span
                  class={`badge ${f.severity === "high" ? "bad" : f.severity === "medium" ? "warn" : ""}`}
                >
                  {f.severity}
                </span>
              </td>
              <td>{f.message}</td>
              <td class="mono small">{f.file ? `${f.file}${f.line ? `:${f.line}` : ""}` : "manifest"}</td>
              <td>{f.weight.toFixed(2)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Scroll>
  );
}

export function Timeline({ submission: s }: { submission: Submission }) {
  const decision = s.review.decision;
  const decided =
    decision === "auto_approve"
      ? "Approved automatically: the risk is low"
      : decision === "approve"
        ? `Approved by ${s.review.reviewer ?? "a reviewer"}`
        : decision === "reject"
          ? `Rejected by ${s.review.reviewer ?? "a reviewer"}`
          : decision === "request_changes"
            ? `Changes requested by ${s.review.reviewer ?? "a reviewer"}`
            : null;
  return (
    <ol class="timeline" aria-label="Submission timeline">
      <li class="done">
        <strong>Submitted</strong> by {s.submitter}, {formatDate(s.createdAt)} ({(s.size / 1024).toFixed(1)}{" "}
        KiB)
      </li>
      <li class="done">
        <strong>Checked</strong>: risk score {s.riskScore.toFixed(2)} with {s.findings.length} findings
        {s.riskScore < 0.3 ? " (below 0.3, no human review needed)" : " (0.3 or more: a reviewer decides)"}
      </li>
      <li class={decided ? "done" : "todo"}>
        <strong>Review</strong>:{" "}
        {decided ? `${decided}, ${formatDate(s.review.decidedAt)}` : "waiting for a reviewer"}
        {s.review.notes && <blockquote>{s.review.notes}</blockquote>}
      </li>
      <li class={s.status === "published" ? "done" : "todo"}>
        <strong>Published</strong>:{" "}
        {s.status === "published" ? (
          <a href={href(`/capsules/${s.name}`)}>
            {s.name}@{s.version}
          </a>
        ) : (
          "not yet"
        )}
      </li>
    </ol>
  );
}

function DropZone({ onUploaded }: { onUploaded: (s: Submission) => void }) {
  const [over, setOver] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const upload = async (file: File | undefined) => {
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      // The bundle goes up as raw gzip bytes, which the typed client has no body shape for.
      const response = await raw("/v1/capsules", {
        method: "POST",
        headers: { "content-type": "application/gzip" },
        body: file,
      });
      const { submission } = (await response.json()) as { submission: Submission };
      onUploaded(submission);
    } catch (e) {
      setError(`${file.name} was not accepted: ${describeError(e)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    // biome-ignore lint/a11y/noStaticElementInteractions: dropping is a pointer shortcut; the file input inside is the keyboard path
    <div
      class={`drop ${over ? "over" : ""}`}
      onDragOver={(e) => {
        e.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={(e) => {
        e.preventDefault();
        setOver(false);
        void upload(e.dataTransfer?.files[0]);
      }}
    >
      <p>
        Drop a capsule bundle (<code>.tar.gz</code> with <code>capsule.yaml</code> at its root) here, or
      </p>
      <p>
        <label for="bundle" class="button">
          Choose a bundle file
        </label>
        <input
          id="bundle"
          class="visually-hidden"
          type="file"
          accept=".tar.gz,.tgz,application/gzip"
          disabled={busy}
          onChange={(e) => void upload(e.currentTarget.files?.[0])}
        />
      </p>
      <p class="hint">
        Make one with <code>npx soma pack</code>. The manifest schema is at{" "}
        <a href="/v1/schemas/capsule.json">/v1/schemas/capsule.json</a>.
      </p>
      {busy && (
        <p role="status" class="status">
          Uploading and checking…
        </p>
      )}
      {error && <ErrorNote message={error} />}
    </div>
  );
}

function MyCapsules({ submissions }: { submissions: Submission[] }) {
  const [payouts] = useAsync(() => json(api.v1.payouts.$get()), []);
  const byName = new Map<string, Submission[]>();
  for (const s of submissions) byName.set(s.name, [...(byName.get(s.name) ?? []), s]);
  const published = [...byName].filter(([, list]) => list.some((s) => s.status === "published"));
  return (
    <section aria-labelledby="mine-title">
      <h2 id="mine-title">My capsules</h2>
      {published.length === 0 ? (
        <Empty>None published yet.</Empty>
      ) : (
        <table>
          <caption class="visually-hidden">My published capsules</caption>
          <thead>
            <tr>
              <th scope="col">Capsule</th>
              <th scope="col">Versions</th>
              <th scope="col">Analytics</th>
            </tr>
          </thead>
          <tbody>
            {published.map(([name, list]) => (
              <tr key={name}>
                <td>
                  <a href={href(`/capsules/${name}`)}>{name}</a>
                </td>
                <td class="mono">
                  {list
                    .filter((s) => s.status === "published")
                    .map((s) => s.version)
                    .join(", ")}
                </td>
                <td>
                  <a href={href("/dashboards/capsule", { capsule: name })}>Runs, success rate, installs</a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Earnings</h3>
      <Show value={payouts} what="earnings">
        {(p) =>
          p.months.length === 0 ? (
            <Empty>No earnings yet. Paid capsules earn when they run.</Empty>
          ) : (
            <ul>
              {p.months.map((m) => (
                <li key={m.period}>
                  {m.period}: {formatUsd(m.earnedMicroUsd)} earned from {m.executions} runs, {m.status}
                </li>
              ))}
            </ul>
          )
        }
      </Show>
    </section>
  );
}

function needSignIn(what: string) {
  return (
    <section>
      <h1>{what}</h1>
      <p>
        <a href={href("/signin", { next: location.hash })}>Sign in</a> first.
      </p>
    </section>
  );
}

export function PublishPage({ session, query }: { session: Session | null; query: URLSearchParams }) {
  const writing = query.get("mode") === "write";
  const [list, reload] = useAsync(
    () =>
      session ? json(api.v1.submissions.$get({ query: { limit: "100" } })) : Promise.resolve({ items: [] }),
    [session?.handle],
  );
  if (!session) return needSignIn("Publish a capsule");
  return (
    <>
      <h1>Publish a capsule</h1>
      <nav aria-label="How to publish" class="tabs">
        <a href={href("/publish")} aria-current={writing ? undefined : "page"}>
          Upload a bundle
        </a>
        <a href={href("/publish", { mode: "write" })} aria-current={writing ? "page" : undefined}>
          Write a manifest
        </a>
      </nav>
      {writing ? (
        <ManifestEditor session={session} onSubmitted={(s) => navigate(href(`/submissions/${s.id}`))} />
      ) : (
        <DropZone onUploaded={(s) => navigate(href(`/submissions/${s.id}`))} />
      )}
      <section aria-labelledby="subs-title">
        <h2 id="subs-title">My submissions</h2>
        <Show value={list} what="your submissions" retry={reload}>
          {(l) =>
            l.items.length === 0 ? (
              <Empty>You have not submitted anything yet.</Empty>
            ) : (
              <ul class="plain">
                {l.items.map((s) => (
                  <li key={s.id}>
                    <a href={href(`/submissions/${s.id}`)}>
                      {s.name}@{s.version}
                    </a>{" "}
                    {statusBadge(s.status)}{" "}
                    <span class="dim small">
                      risk {s.riskScore.toFixed(2)}, {formatDate(s.createdAt)}
                    </span>
                  </li>
                ))}
              </ul>
            )
          }
        </Show>
      </section>
      {list.state === "ready" && <MyCapsules submissions={list.data.items} />}
    </>
  );
}

export function SubmissionPage({ id, session }: { id: string; session: Session | null }) {
  const [sub, reload] = useAsync(
    () => json(api.v1.submissions[":id"].$get({ param: { id } })),
    [id, session?.handle],
    // A submission moves on without the author (a reviewer decides, publishing finishes): keep it current.
    5000,
  );
  if (!session) return needSignIn("Submission");
  return (
    <Show value={sub} what="the submission" retry={reload}>
      {({ submission: s }) => (
        <>
          <p>
            <a href={href("/publish")}>← My submissions</a>
          </p>
          <h1>
            {s.name}@{s.version} {statusBadge(s.status)}
          </h1>
          <Timeline submission={s} />
          <Findings findings={s.findings} />
          <p class="dim small mono break">sha256 {s.sha256}</p>
        </>
      )}
    </Show>
  );
}
