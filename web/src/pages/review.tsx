import type { InferResponseType } from "hono/client";
import { useState } from "preact/hooks";
import { api, json, type Session } from "../api";
import { describeError, Empty, ErrorNote, formatDate, Show, Stars, useAsync } from "../components/ui";
import { href } from "../router";
import { Findings, statusBadge } from "./publish";

type QueueItem = InferResponseType<(typeof api.v1)["review-queue"]["$get"], 200>["items"][number];
type Reported = InferResponseType<typeof api.v1.moderation.$get, 200>["items"][number];

/** Flattens a manifest into `path = value` lines so two versions compare line by line. */
function flatten(value: unknown, path = "", out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value)
      ? value.map((v, i) => [String(i), v] as const)
      : Object.entries(value);
    if (entries.length === 0) out.set(path, Array.isArray(value) ? "[]" : "{}");
    for (const [key, child] of entries) flatten(child, path ? `${path}.${key}` : key, out);
  } else {
    out.set(path, JSON.stringify(value));
  }
  return out;
}

function ManifestDiff({ item }: { item: QueueItem }) {
  if (!item.previous) return <p>First version of this capsule: there is nothing to compare with.</p>;
  const before = flatten(item.previous.manifest);
  const after = flatten(item.manifest);
  const keys = [...new Set([...before.keys(), ...after.keys()])].sort();
  const changes = keys.filter((k) => before.get(k) !== after.get(k) && k !== "metadata.version");
  return (
    <div>
      <p>
        Changes since {item.previous.version} (
        {changes.length === 0 ? "none besides the version" : `${changes.length} fields`}):
      </p>
      {changes.length > 0 && (
        <pre class="diff">
          {changes.map((k) => (
            <span key={k}>
              {before.has(k) && <del>{`- ${k} = ${before.get(k)}\n`}</del>}
              {after.has(k) && <ins>{`+ ${k} = ${after.get(k)}\n`}</ins>}
            </span>
          ))}
        </pre>
      )}
    </div>
  );
}

function Decide({ item, onDone }: { item: QueueItem; onDone: () => void }) {
  const [decision, setDecision] = useState<"approve" | "reject" | "request_changes">("approve");
  const [notes, setNotes] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await json(
        api.v1.submissions[":id"].decision.$post({ param: { id: item.id }, json: { decision, notes } }),
      );
      onDone();
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };
  const group = `decision-${item.id}`;
  return (
    <form onSubmit={(e) => void submit(e)}>
      <fieldset>
        <legend>
          Decision on {item.name}@{item.version}
        </legend>
        {(
          [
            ["approve", "Approve and publish"],
            ["request_changes", "Request changes"],
            ["reject", "Reject"],
          ] as const
        ).map(([value, label]) => (
          <p class="check" key={value}>
            <input
              type="radio"
              id={`${group}-${value}`}
              name={group}
              value={value}
              checked={decision === value}
              onChange={() => setDecision(value)}
            />
            <label for={`${group}-${value}`}>{label}</label>
          </p>
        ))}
      </fieldset>
      <p>
        <label for={`${group}-notes`}>
          Notes for the author{decision === "approve" ? " (optional)" : " (required)"}
        </label>
        <textarea
          id={`${group}-notes`}
          rows={3}
          required={decision !== "approve"}
          value={notes}
          onInput={(e) => setNotes(e.currentTarget.value)}
        />
      </p>
      <button type="submit" class="primary" disabled={busy}>
        Record the decision
      </button>
      {error && <ErrorNote message={error} />}
    </form>
  );
}

function Queue() {
  const [queue, reload] = useAsync(
    () => json(api.v1["review-queue"].$get({ query: { limit: "50" } })),
    [],
    10_000,
  );
  const [done, setDone] = useState<string | null>(null);
  return (
    <Show value={queue} what="the review queue" retry={reload}>
      {(q) => (
        <>
          {done && (
            <p class="ok" role="status">
              {done}
            </p>
          )}
          {q.items.length === 0 ? (
            <Empty>The queue is empty: every submission has a decision.</Empty>
          ) : (
            <ul class="plain">
              {q.items.map((item) => (
                <li key={item.id} class="panel">
                  <h2>
                    {item.name}@{item.version} {statusBadge(item.status)}
                  </h2>
                  <p>
                    Submitted by <strong>{item.submitter}</strong>, {formatDate(item.createdAt)}.{" "}
                    <span class={`badge ${item.riskScore >= 0.6 ? "bad" : "warn"}`}>
                      Risk score {item.riskScore.toFixed(2)}
                    </span>
                  </p>
                  <Findings findings={item.findings} />
                  <ManifestDiff item={item} />
                  <Decide
                    item={item}
                    onDone={() => {
                      setDone(`Decision recorded for ${item.name}@${item.version}.`);
                      reload();
                    }}
                  />
                </li>
              ))}
            </ul>
          )}
        </>
      )}
    </Show>
  );
}

function ModerationItem({ item, onDone }: { item: Reported; onDone: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const decide = async (decision: "restore" | "remove") => {
    try {
      await json(
        api.v1.moderation[":reviewId"].$post({ param: { reviewId: item.review.id }, json: { decision } }),
      );
      onDone();
    } catch (e) {
      setError(describeError(e));
    }
  };
  return (
    <li class="panel">
      <p>
        <Stars value={item.review.stars} /> by <strong>{item.review.author.handle}</strong> on{" "}
        <a href={href(`/capsules/${item.review.capsule}`)}>{item.review.capsule}</a> ({item.review.status},{" "}
        {item.openReports} open reports)
      </p>
      {item.review.text && <blockquote>{item.review.text}</blockquote>}
      <ul>
        {item.reports.map((r) => (
          <li key={`${r.reporter.handle}-${r.createdAt}`}>
            {r.reporter.handle}: {r.reason}
          </li>
        ))}
      </ul>
      <p class="row">
        <button type="button" onClick={() => void decide("restore")}>
          Restore
        </button>
        <button type="button" class="danger" onClick={() => void decide("remove")}>
          Remove
        </button>
      </p>
      {error && <ErrorNote message={error} />}
    </li>
  );
}

function Moderation() {
  const [items, reload] = useAsync(() => json(api.v1.moderation.$get({ query: { limit: "50" } })), []);
  return (
    <Show value={items} what="reported reviews" retry={reload}>
      {(m) =>
        m.items.length === 0 ? (
          <Empty>No reviews are waiting for moderation.</Empty>
        ) : (
          <ul class="plain">
            {m.items.map((item) => (
              <ModerationItem key={item.review.id} item={item} onDone={reload} />
            ))}
          </ul>
        )
      }
    </Show>
  );
}

export function ReviewPage({ session, query }: { session: Session | null; query: URLSearchParams }) {
  const tab = query.get("tab") === "moderation" ? "moderation" : "queue";
  if (!session?.roles.some((r) => r === "reviewer" || r === "admin")) {
    return (
      <section>
        <h1>Review</h1>
        <p>
          The review queue is for reviewers and admins.{" "}
          {session ? (
            "Your account has neither role."
          ) : (
            <a href={href("/signin", { next: location.hash })}>Sign in</a>
          )}
        </p>
      </section>
    );
  }
  return (
    <>
      <h1>Review</h1>
      <nav aria-label="Review sections" class="tabs">
        <a href={href("/review")} aria-current={tab === "queue" ? "page" : undefined}>
          Submissions
        </a>
        <a
          href={href("/review", { tab: "moderation" })}
          aria-current={tab === "moderation" ? "page" : undefined}
        >
          Reported reviews
        </a>
      </nav>
      {tab === "queue" ? <Queue /> : <Moderation />}
    </>
  );
}
