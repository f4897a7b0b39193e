import type { InferResponseType } from "hono/client";
import { useState } from "preact/hooks";
import { api, json, type Session } from "../api";
import {
  describeError,
  Empty,
  ErrorNote,
  formatDate,
  formatNumber,
  Scroll,
  Show,
  Stars,
  useAsync,
} from "../components/ui";
import { href } from "../router";
import { permissionInWords, plural, pricingInWords } from "../words";
import { InstallDialog } from "./install";

type Detail = InferResponseType<(typeof api.v1.capsules)[":ns"][":name"]["$get"], 200>;
type Review = InferResponseType<
  (typeof api.v1.capsules)[":ns"][":name"]["reviews"]["$get"],
  200
>["items"][number];

/** The parts of capsule.yaml this page shows; the API returns the manifest as validated JSON. */
export interface ManifestView {
  metadata?: { license?: string; tags?: string[] };
  spec?: {
    description?: string;
    runtime?: string;
    permissions?: string[];
    dependencies?: Record<string, string>;
    tokenEstimate?: { planning?: number; execution?: number };
    pricing?: { model?: string; amountUsd?: number };
  };
}

export function manifestView(manifest: unknown): ManifestView {
  return (manifest ?? {}) as ManifestView;
}

export function splitName(name: string): { ns: string; name: string } {
  const [ns = "", rest = ""] = name.split("/");
  return { ns, name: rest };
}

function Versions({ versions }: { versions: Detail["versions"] }) {
  return (
    <Scroll label="Versions">
      <table>
        <caption>Versions, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Version</th>
            <th scope="col">Status</th>
            <th scope="col">Published</th>
            <th scope="col">Notes</th>
          </tr>
        </thead>
        <tbody>
          {versions.map((v) => (
            <tr key={v.version}>
              <td class="mono">{v.version}</td>
              <td>
                <span
                  class={`badge ${v.status === "published" ? "ok" : v.status === "yanked" ? "bad" : "warn"}`}
                >
                  {v.status}
                </span>
              </td>
              <td>{formatDate(v.publishedAt)}</td>
              <td>{v.yankReason ?? v.deprecationMessage ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Scroll>
  );
}

function RatingSummary({ capsule, version }: { capsule: { ns: string; name: string }; version: number }) {
  const [rating] = useAsync(
    () => json(api.v1.capsules[":ns"][":name"].rating.$get({ param: capsule })),
    [capsule.ns, capsule.name, version],
  );
  return (
    <Show value={rating} what="ratings">
      {(r) => (
        <div>
          <p>
            {r.count === 0 ? (
              "No ratings yet."
            ) : (
              <>
                <Stars value={r.average ?? 0} /> {r.average?.toFixed(1)} from{" "}
                {plural(r.count, "rating", "ratings")} (score {r.bayesian?.toFixed(2)}, weighted toward{" "}
                {r.prior.mean} stars until there are more votes)
              </>
            )}
          </p>
          <table class="bars">
            <caption class="visually-hidden">Ratings by stars</caption>
            <tbody>
              {([5, 4, 3, 2, 1] as const).map((stars) => {
                const n = r.distribution[stars];
                const pct = r.count ? Math.round((n / r.count) * 100) : 0;
                return (
                  <tr key={stars}>
                    <th scope="row">{stars} stars</th>
                    <td>
                      <span class="bar" style={{ width: `${pct}%` }} />
                    </td>
                    <td>{n}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </Show>
  );
}

function ReviewItem({
  review,
  capsule,
  session,
}: {
  review: Review;
  capsule: { ns: string; name: string };
  session: Session | null;
}) {
  const [note, setNote] = useState<string | null>(null);
  const [reporting, setReporting] = useState(false);
  const [reason, setReason] = useState("");
  const param = { ...capsule, reviewId: review.id };
  const vote = async (helpful: boolean) => {
    try {
      await json(
        api.v1.capsules[":ns"][":name"].reviews[":reviewId"].vote.$post({ param, json: { helpful } }),
      );
      setNote("Thanks, your vote counts.");
    } catch (e) {
      setNote(describeError(e));
    }
  };
  const report = async (event: Event) => {
    event.preventDefault();
    try {
      await json(
        api.v1.capsules[":ns"][":name"].reviews[":reviewId"].report.$post({ param, json: { reason } }),
      );
      setNote("Reported. Reviewers look at reviews that gather reports.");
      setReporting(false);
    } catch (e) {
      setNote(describeError(e));
    }
  };
  return (
    <li class="review">
      <p>
        <Stars value={review.stars} /> <strong>{review.author.handle}</strong>{" "}
        <span class="dim small">{formatDate(review.createdAt)}</span>
      </p>
      {review.text && <p>{review.text}</p>}
      {review.reply && (
        <p class="reply">
          <strong>Author's reply:</strong> {review.reply.text}
        </p>
      )}
      <p class="small row">
        <span>
          {review.helpful} found this helpful, {review.notHelpful} did not.
        </span>
        {session && (
          <>
            <button type="button" class="link" onClick={() => void vote(true)}>
              Helpful
            </button>
            <button type="button" class="link" onClick={() => void vote(false)}>
              Not helpful
            </button>
            <button
              type="button"
              class="link"
              aria-expanded={reporting}
              onClick={() => setReporting(!reporting)}
            >
              Report
            </button>
          </>
        )}
      </p>
      {reporting && (
        <form onSubmit={(e) => void report(e)} class="row">
          <label for={`reason-${review.id}`}>Why should a reviewer look at this?</label>
          <input
            id={`reason-${review.id}`}
            required
            value={reason}
            onInput={(e) => setReason(e.currentTarget.value)}
          />
          <button type="submit">Send report</button>
        </form>
      )}
      {note && (
        <p class="small" role="status">
          {note}
        </p>
      )}
    </li>
  );
}

function RateForm({ capsule, onDone }: { capsule: { ns: string; name: string }; onDone: () => void }) {
  const [stars, setStars] = useState(5);
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: Event) => {
    event.preventDefault();
    try {
      await json(
        api.v1.capsules[":ns"][":name"].rating.$put({ param: capsule, json: { stars, text: text || null } }),
      );
      setError(null);
      onDone();
    } catch (e) {
      setError(describeError(e));
    }
  };
  return (
    <form onSubmit={(e) => void submit(e)} aria-labelledby="rate-title">
      <h3 id="rate-title">Rate this capsule</h3>
      <p class="hint">Ratings come from accounts that installed the capsule and ran it at least once.</p>
      <p>
        <label for="stars">Stars</label>
        <select id="stars" value={stars} onChange={(e) => setStars(Number(e.currentTarget.value))}>
          {[5, 4, 3, 2, 1].map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </p>
      <p>
        <label for="review-text">Review (optional)</label>
        <textarea id="review-text" rows={3} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </p>
      <button type="submit">Save rating</button>
      {error && <ErrorNote message={error} />}
    </form>
  );
}

function Reviews({ capsule, session }: { capsule: { ns: string; name: string }; session: Session | null }) {
  // Bumped after a rating is saved, so the distribution and the list are read again together.
  const [version, setVersion] = useState(0);
  const [reviews, reload] = useAsync(
    () =>
      json(
        api.v1.capsules[":ns"][":name"].reviews.$get({
          param: capsule,
          query: { limit: "20", sort: "helpful" },
        }),
      ),
    [capsule.ns, capsule.name, version],
  );
  return (
    <section aria-labelledby="reviews-title">
      <h2 id="reviews-title">Ratings and reviews</h2>
      <RatingSummary capsule={capsule} version={version} />
      <Show value={reviews} what="reviews" retry={reload}>
        {(r) =>
          r.items.length === 0 ? (
            <Empty>No reviews yet.</Empty>
          ) : (
            <ul class="plain">
              {r.items.map((review) => (
                <ReviewItem key={review.id} review={review} capsule={capsule} session={session} />
              ))}
            </ul>
          )
        }
      </Show>
      {session && <RateForm capsule={capsule} onDone={() => setVersion((v) => v + 1)} />}
    </section>
  );
}

function Verify({ name, version, sha256 }: { name: string; version: string; sha256: string }) {
  const base = `${location.origin}/v1/capsules/${name}/versions/${version}`;
  return (
    <section aria-labelledby="verify-title">
      <h2 id="verify-title">Verify the signature yourself</h2>
      <p>
        Every published version is signed by the platform (ECDSA P-256, SHA-256). The bundle's SHA-256 is{" "}
        <code class="break">{sha256}</code>. With the CLI:
      </p>
      <pre>
        <code>{`npx soma verify ${name}@${version}`}</code>
      </pre>
      <p>Or with openssl alone:</p>
      <pre>
        <code>
          {`curl -sO ${location.origin}/.well-known/soma/signing-key.pem
curl -s -o bundle.tar.gz ${base}/bundle
curl -s ${base}/bundle.sig | base64 -d > bundle.sig.der
openssl dgst -sha256 -verify signing-key.pem -signature bundle.sig.der bundle.tar.gz`}
        </code>
      </pre>
      <p>
        The attestation (a Sigstore bundle with an in-toto statement) is at{" "}
        <a href={`${base}/attestation`}>{`…/${version}/attestation`}</a> and the SBOM at{" "}
        <a href={`${base}/sbom`}>{`…/${version}/sbom`}</a>.
      </p>
    </section>
  );
}

export function CapsulePage({
  name,
  query,
  session,
}: {
  name: string;
  query: URLSearchParams;
  session: Session | null;
}) {
  const capsule = splitName(name);
  const [detail, reload] = useAsync(
    () => json(api.v1.capsules[":ns"][":name"].$get({ param: capsule })),
    [name],
  );
  const [pricing] = useAsync(
    () => json(api.v1.capsules[":ns"][":name"].pricing.$get({ param: capsule })),
    [name],
  );
  const [together] = useAsync(
    () =>
      json(api.v1.capsules[":ns"][":name"]["used-together"].$get({ param: capsule, query: { limit: "6" } })),
    [name],
  );
  // The success rate comes from the author's analytics, which only the owner and admins may read.
  const [performance] = useAsync(
    () =>
      session
        ? json(
            api.v1.analytics.capsules[":ns"][":name"].$get({
              param: capsule,
              query: { interval: "day", format: "json" },
            }),
          ).catch(() => null)
        : Promise.resolve(null),
    [name, session?.handle],
  );
  const successRate = performance.state === "ready" ? (performance.data?.totals.successRate ?? null) : null;
  const installing = query.get("install") === "1";
  return (
    <Show value={detail} what="the capsule" retry={reload}>
      {(d) => {
        const m = manifestView(d.manifest);
        const latest = d.versions.find((v) => v.version === d.capsule.latestVersion) ?? d.versions[0];
        const deps = Object.entries(m.spec?.dependencies ?? {});
        const permissions = m.spec?.permissions ?? [];
        const price = pricing.state === "ready" ? pricing.data.pricing : null;
        return (
          <>
            <p>
              <a href={href("/")}>← Catalog</a>
            </p>
            <div class="title-row">
              <h1>{d.capsule.name}</h1>
              <a class="button primary" href={href(`/capsules/${name}`, { install: "1" })}>
                Install
              </a>
            </div>
            <p class="lead">{m.spec?.description ?? d.capsule.description}</p>
            <p class="dim">
              By <strong>{d.capsule.publisher.handle}</strong>
              {d.capsule.publisher.verified && <span class="badge ok">Verified publisher</span>} · v
              {d.capsule.latestVersion} · {d.capsule.category} · {d.capsule.runtime} runtime ·{" "}
              {m.metadata?.license ?? "no license"}
            </p>
            <dl class="facts">
              <div>
                <dt>Installs</dt>
                <dd>{formatNumber(d.capsule.installCount)}</dd>
              </div>
              <div>
                <dt>Executions</dt>
                <dd>{formatNumber(d.capsule.executionCount)}</dd>
              </div>
              <div>
                <dt>Rating</dt>
                <dd>
                  {d.capsule.ratingCount
                    ? `${d.capsule.ratingAvg.toFixed(2)} (${d.capsule.ratingCount})`
                    : "none yet"}
                </dd>
              </div>
              <div>
                <dt>Token estimate</dt>
                <dd>
                  {formatNumber(
                    (m.spec?.tokenEstimate?.planning ?? 0) + (m.spec?.tokenEstimate?.execution ?? 0),
                  )}{" "}
                  per run
                </dd>
              </div>
              <div>
                <dt>Price</dt>
                <dd>
                  {price?.current
                    ? pricingInWords(price.current.model, price.current.amountUsd)
                    : pricingInWords(d.capsule.pricingModel)}
                  {price?.upcoming && (
                    <span class="small">
                      {" "}
                      (changes to {pricingInWords(price.upcoming.model ?? "", price.upcoming.amountUsd)} on{" "}
                      {formatDate(price.upcoming.effectiveAt)})
                    </span>
                  )}
                </dd>
              </div>
            </dl>
            {successRate !== null && (
              <p>
                Success rate over the last 30 days: <strong>{(successRate * 100).toFixed(1)}%</strong> of
                runs. <a href={href("/dashboards/capsule", { capsule: d.capsule.name })}>Runs over time</a>
              </p>
            )}
            <div class="cols">
              <section aria-labelledby="perm-title">
                <h2 id="perm-title">What it may do</h2>
                {permissions.length === 0 ? (
                  <p>Nothing beyond computing on its input: no files, network or models.</p>
                ) : (
                  <ul>
                    {permissions.map((p) => (
                      <li key={p}>
                        {permissionInWords(p)} <code class="dim small">{p}</code>
                      </li>
                    ))}
                  </ul>
                )}
              </section>
              <section aria-labelledby="deps-title">
                <h2 id="deps-title">Dependencies</h2>
                {deps.length === 0 ? (
                  <p>None.</p>
                ) : (
                  <ul>
                    {deps.map(([dep, range]) => (
                      <li key={dep}>
                        <a href={href(`/capsules/${dep}`)}>{dep}</a> <code>{range}</code>
                      </li>
                    ))}
                  </ul>
                )}
              </section>
            </div>
            <Versions versions={d.versions} />
            {latest && <Verify name={d.capsule.name} version={latest.version} sha256={latest.sha256} />}
            <Reviews capsule={capsule} session={session} />
            {together.state === "ready" && together.data.items.length > 0 && (
              <section aria-labelledby="together-title">
                <h2 id="together-title">Often installed with</h2>
                <ul>
                  {together.data.items.map((t) => (
                    <li key={t.capsule.name}>
                      <a href={href(`/capsules/${t.capsule.name}`)}>{t.capsule.name}</a> ({t.accounts}{" "}
                      accounts)
                    </li>
                  ))}
                </ul>
              </section>
            )}
            {installing && (
              <InstallDialog
                capsule={d.capsule.name}
                manifest={m}
                session={session}
                price={price?.current ?? null}
              />
            )}
          </>
        );
      }}
    </Show>
  );
}
