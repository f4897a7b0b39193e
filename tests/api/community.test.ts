import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";
import { escapeHtml } from "../../workers/shared/community/html";
import { REVIEW_REPORT_THRESHOLD } from "../../workers/shared/community/moderation";
import {
  bayesianAverage,
  PRIOR_MEAN,
  PRIOR_VOTES,
  trendingWeight,
} from "../../workers/shared/community/scoring";
import { adminToken, api, countRows, errorOf, grantRoles } from "../helpers";
import { createProject, publishReviewer, publishWorker, signup, waitForStatus } from "../kamachiq-helpers";

type Account = Awaited<ReturnType<typeof signup>>;

const GOOD_FILE = `'"""Generated."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n'`;
/** Returns one clean Python file, so the quality gate passes and the run settles at once. */
const QUICK = `export default { async run(input) {
  return { files: [{ path: String(input.name ?? "x") + ".py", content: ${GOOD_FILE} }] };
} };`;

interface Review {
  id: string;
  capsule: string;
  author: { handle: string };
  stars: number;
  text: string | null;
  textHtml: string | null;
  status: string;
  helpful: number;
  notHelpful: number;
  reply: { text: string; textHtml: string; createdAt: string; updatedAt: string } | null;
  createdAt: string;
  updatedAt: string;
}

interface Rating {
  average: number | null;
  bayesian: number | null;
  count: number;
  distribution: Record<string, number>;
  prior: { mean: number; votes: number };
}

interface CatalogItem {
  name: string;
  ratingAvg: number;
  ratingCount: number;
}

let author: Account;
let ns = "";
/** Accounts that installed and ran alpha, beta, gamma and delta: they may rate them. */
let raters: Account[] = [];
/** Ran epsilon in a project but never installed it. */
let ranOnly: Account;

const n = (name: string) => `${ns}/${name}`;

function install(account: Account, capsule: string): Promise<Response> {
  return api("/v1/installs", { method: "POST", token: account.apiKey, json: { capsule } });
}

async function installOrFail(account: Account, capsule: string): Promise<string> {
  const res = await install(account, capsule);
  if (res.status !== 201) throw new Error(`install ${capsule}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { install: { id: string } }).install.id;
}

/**
 * Runs the capsules as one project owned by the account, then waits for the executions to be recorded: the
 * coordinator counts them from its alarm, just after the project completes.
 */
async function runOnce(account: Account, capsules: string[]): Promise<void> {
  const res = await createProject(account.apiKey, {
    name: "rate-me",
    spec: { tasks: capsules.map((capsule, i) => ({ id: `t${i}`, capsule, inputs: { name: `t${i}` } })) },
    budget: { tokens: 1_000_000 },
  });
  if (res.status !== 201) throw new Error(`project: ${res.status} ${await res.text()}`);
  const id = ((await res.json()) as { project: { id: string } }).project.id;
  expect((await waitForStatus(account.apiKey, id, ["completed", "failed"])).status).toBe("completed");
  const deadline = Date.now() + 20_000;
  for (;;) {
    const row = await env.DB.prepare(
      `SELECT count(DISTINCT capsule) AS n FROM ledger_entries WHERE kind = 'execution_counted' AND account_id = ?`,
    )
      .bind(account.id)
      .first<{ n: number }>();
    if ((row?.n ?? 0) >= capsules.length) return;
    if (Date.now() > deadline) throw new Error(`executions of ${account.handle} were not recorded`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function rate(account: Account, capsule: string, json: unknown): Promise<Response> {
  return api(`/v1/capsules/${capsule}/rating`, { method: "PUT", token: account.apiKey, json });
}

async function rateOrFail(account: Account, capsule: string, json: unknown): Promise<Review> {
  const res = await rate(account, capsule, json);
  if (res.status !== 201 && res.status !== 200) throw new Error(`rate: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { review: Review }).review;
}

async function ratingOf(capsule: string): Promise<Rating> {
  const res = await api(`/v1/capsules/${capsule}/rating`);
  expect(res.status).toBe(200);
  return (await res.json()) as Rating;
}

async function reviewsOf(
  capsule: string,
  query = "",
): Promise<{ items: Review[]; nextCursor: string | null }> {
  const res = await api(`/v1/capsules/${capsule}/reviews${query}`);
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as { items: Review[]; nextCursor: string | null };
}

async function capsuleRow(capsule: string): Promise<{ rating_avg: number; rating_count: number }> {
  const row = await env.DB.prepare("SELECT rating_avg, rating_count FROM capsules WHERE name = ?")
    .bind(capsule)
    .first<{ rating_avg: number; rating_count: number }>();
  if (!row) throw new Error(`no capsule ${capsule}`);
  return row;
}

function post(path: string, token: string | undefined, json: unknown): Promise<Response> {
  return api(path, { method: "POST", json, ...(token ? { token } : {}) });
}

/** Counts events of a type about a capsule once the events queue has delivered them to ClickHouse. */
async function eventsInClickHouse(type: string, capsule: string, expected: number): Promise<number> {
  const deadline = Date.now() + 15_000;
  let count = 0;
  while (Date.now() < deadline) {
    const [row] = await queryRows(
      env,
      sql`SELECT count() AS n FROM events FINAL WHERE type = ${type} AND capsule = ${capsule}`,
      z.object({ n: z.coerce.number() }),
    );
    count = row?.n ?? 0;
    if (count >= expected) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return count;
}

const tick = () => new Promise((r) => setTimeout(r, 5));

beforeAll(async () => {
  await publishReviewer();
  author = await signup();
  ns = author.handle;
  for (const name of ["alpha", "beta", "gamma", "delta", "epsilon"]) {
    await publishWorker(author.apiKey, n(name), QUICK);
  }
  raters = await Promise.all(Array.from({ length: 6 }, () => signup()));
  ranOnly = await signup();
  const rated = [n("alpha"), n("beta"), n("gamma"), n("delta")];
  await Promise.all([
    ...raters.map(async (rater) => {
      for (const capsule of rated) await installOrFail(rater, capsule);
      await runOnce(rater, rated);
    }),
    runOnce(ranOnly, [n("epsilon")]),
  ]);
}, 180_000);

describe("scoring (pure)", () => {
  it("ranks hundreds of ratings averaging 4.6 above a handful of 5s", () => {
    const fewFives = bayesianAverage(3 * 5, 3)!;
    const longRecord = bayesianAverage(180 * 5 + 120 * 4, 300)!;
    expect((180 * 5 + 120 * 4) / 300).toBeCloseTo(4.6, 10);
    expect(fewFives).toBeCloseTo((PRIOR_VOTES * PRIOR_MEAN + 15) / (PRIOR_VOTES + 3), 10);
    expect(longRecord).toBeGreaterThan(fewFives);
    expect(longRecord).toBeCloseTo(4.565, 3);
    // Enough 5s do earn the top: evidence beats the prior.
    expect(bayesianAverage(100 * 5, 100)!).toBeGreaterThan(longRecord);
    // The score moves towards the plain average as ratings accumulate.
    expect(bayesianAverage(4.6 * 10_000, 10_000)!).toBeCloseTo(4.6, 2);
    expect(bayesianAverage(0, 0)).toBeNull();
  });

  it("decays trending signals by exp(-age/2) and ignores anything older than a week", () => {
    expect(trendingWeight(0)).toBe(1);
    expect(trendingWeight(2)).toBeCloseTo(Math.exp(-1), 10);
    expect(trendingWeight(1)).toBeGreaterThan(trendingWeight(3));
    expect(trendingWeight(7.5)).toBe(0);
  });

  it("escapes the five HTML-significant characters and nothing else", () => {
    expect(escapeHtml(`<a href="x">Tom & 'Jerry'</a> ok`)).toBe(
      "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt; ok",
    );
  });
});

describe("PUT and DELETE /v1/capsules/:ns/:name/rating", () => {
  it("refuses accounts that never ran the capsule, installed it without running it, or ran it without installing it", async () => {
    const capsule = n("epsilon");
    const never = await signup();
    const installedOnly = await signup();
    await installOrFail(installedOnly, capsule);
    const before = await countRows("capsule_reviews");

    const cases: [Account, { installed: boolean; ran: boolean }][] = [
      [never, { installed: false, ran: false }],
      [installedOnly, { installed: true, ran: false }],
      [ranOnly, { installed: false, ran: true }],
    ];
    for (const [account, eligibility] of cases) {
      const res = await rate(account, capsule, { stars: 5 });
      expect(res.status).toBe(403);
      const error = await errorOf(res);
      expect(error.code).toBe("FORBIDDEN");
      expect(error.details).toEqual(eligibility);
    }
    expect(await countRows("capsule_reviews")).toBe(before);
    expect(await capsuleRow(capsule)).toEqual({ rating_avg: 0, rating_count: 0 });

    // Installing completes the proof for the account that already ran it.
    await installOrFail(ranOnly, capsule);
    expect((await rate(ranOnly, capsule, { stars: 4 })).status).toBe(201);
  });

  it("keeps one rating per account, editable, with text stored as written and escaped only in textHtml", async () => {
    const capsule = n("gamma");
    const [rater] = raters;
    const hostile = `<script>alert("x")</script> & 'quoted'`;
    const created = await rate(rater!, capsule, { stars: 4, text: hostile });
    expect(created.status).toBe(201);
    const first = ((await created.json()) as { review: Review }).review;
    expect(first).toMatchObject({
      stars: 4,
      text: hostile,
      status: "visible",
      author: { handle: rater!.handle },
    });
    expect(first.textHtml).toBe("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quoted&#39;");
    expect(first.textHtml).not.toContain("<script>");

    const edited = await rate(rater!, capsule, { stars: 2 });
    expect(edited.status).toBe(200);
    const second = ((await edited.json()) as { review: Review }).review;
    expect(second).toMatchObject({ id: first.id, stars: 2, text: null, textHtml: null });
    const rows = await env.DB.prepare(
      "SELECT count(*) AS n FROM capsule_reviews WHERE capsule_name = ? AND account_id = ?",
    )
      .bind(capsule, rater!.id)
      .first<{ n: number }>();
    expect(rows?.n).toBe(1);

    const rating = await ratingOf(capsule);
    expect(rating).toMatchObject({ average: 2, count: 1, distribution: { 1: 0, 2: 1, 3: 0, 4: 0, 5: 0 } });
    expect(rating.bayesian).toBeCloseTo(bayesianAverage(2, 1)!, 2);
    expect((await capsuleRow(capsule)).rating_avg).toBeCloseTo(bayesianAverage(2, 1)!, 10);

    expect(
      (await api(`/v1/capsules/${capsule}/rating`, { method: "DELETE", token: rater!.apiKey })).status,
    ).toBe(204);
    expect(await ratingOf(capsule)).toMatchObject({ average: null, bayesian: null, count: 0 });
    expect(await capsuleRow(capsule)).toEqual({ rating_avg: 0, rating_count: 0 });
    expect(
      (await api(`/v1/capsules/${capsule}/rating`, { method: "DELETE", token: rater!.apiKey })).status,
    ).toBe(404);
  });

  it("validates the body, requires an account and refuses the capsule's own author", async () => {
    const capsule = n("gamma");
    const [rater] = raters;
    const before = await countRows("capsule_reviews");
    for (const body of [
      { stars: 0 },
      { stars: 6 },
      { stars: 4.5 },
      { stars: "5" },
      { stars: 5, text: "" },
      { stars: 5, text: "   " },
      { stars: 5, text: "x".repeat(5001) },
      { stars: 5, extra: true },
      {},
    ]) {
      const res = await rate(rater!, capsule, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect((await errorOf(res)).code).toBe("VALIDATION_FAILED");
    }
    expect((await api(`/v1/capsules/${capsule}/rating`, { method: "PUT", json: { stars: 5 } })).status).toBe(
      401,
    );
    expect(
      (
        await api(`/v1/capsules/${capsule}/rating`, {
          method: "PUT",
          token: adminToken(),
          json: { stars: 5 },
        })
      ).status,
    ).toBe(403);
    expect((await api(`/v1/capsules/${capsule}/rating`, { method: "DELETE" })).status).toBe(401);
    const own = await rate(author, capsule, { stars: 5 });
    expect(own.status).toBe(403);
    expect((await errorOf(own)).message).toContain("own");
    expect((await rate(rater!, n("missing"), { stars: 5 })).status).toBe(404);
    expect((await rate(rater!, "Bad/Name", { stars: 5 })).status).toBe(400);
    expect(await countRows("capsule_reviews")).toBe(before);
    expect((await api(`/v1/capsules/${n("missing")}/rating`)).status).toBe(404);
  });
});

describe("Bayesian ordering", () => {
  it("ranks six ratings averaging 4.67 above three 5-star ratings, in the catalog too, and sends rating events", async () => {
    for (const rater of raters.slice(0, 3)) await rateOrFail(rater, n("alpha"), { stars: 5 });
    const betaStars = [5, 5, 5, 5, 4, 4];
    for (const [i, rater] of raters.entries()) await rateOrFail(rater, n("beta"), { stars: betaStars[i] });

    const alpha = await ratingOf(n("alpha"));
    const beta = await ratingOf(n("beta"));
    expect(alpha).toEqual({
      capsule: n("alpha"),
      average: 5,
      bayesian: 3.85,
      count: 3,
      distribution: { 1: 0, 2: 0, 3: 0, 4: 0, 5: 3 },
      prior: { mean: PRIOR_MEAN, votes: PRIOR_VOTES },
    });
    expect(beta).toMatchObject({ average: 4.67, bayesian: 3.94, count: 6, distribution: { 4: 2, 5: 4 } });
    // The plain average puts alpha first; the Bayesian one does not.
    expect(alpha.average!).toBeGreaterThan(beta.average!);
    expect(beta.bayesian!).toBeGreaterThan(alpha.bayesian!);

    const res = await api("/v1/capsules?sort=rating&limit=100");
    const items = ((await res.json()) as { items: CatalogItem[] }).items;
    const position = (name: string) => items.findIndex((item) => item.name === name);
    expect(position(n("beta"))).toBeGreaterThanOrEqual(0);
    expect(position(n("beta"))).toBeLessThan(position(n("alpha")));
    expect(items[position(n("beta"))]).toMatchObject({ ratingCount: 6 });
    expect(items[position(n("beta"))]!.ratingAvg).toBeCloseTo((35 + 28) / 16, 10);

    expect(await eventsInClickHouse("soma.rating.created", n("beta"), 6)).toBe(6);
  });
});

describe("reviews, votes and replies", () => {
  let reviews: Review[] = [];

  beforeAll(async () => {
    const capsule = n("gamma");
    reviews = [];
    reviews.push(await rateOrFail(raters[1]!, capsule, { stars: 5, text: "Great" }));
    await tick();
    reviews.push(await rateOrFail(raters[2]!, capsule, { stars: 3, text: "Meh" }));
    await tick();
    reviews.push(await rateOrFail(raters[3]!, capsule, { stars: 4 }));
  });

  const vote = (account: Account, review: Review, helpful: unknown) =>
    post(`/v1/capsules/${review.capsule}/reviews/${review.id}/vote`, account.apiKey, { helpful });

  it("lists visible reviews most helpful first or most recent first, a page at a time", async () => {
    const [great, meh] = reviews;
    expect((await vote(raters[4]!, meh!, true)).status).toBe(200);
    expect((await vote(raters[5]!, meh!, true)).status).toBe(200);
    expect((await vote(raters[0]!, great!, false)).status).toBe(200);

    const helpful = await reviewsOf(n("gamma"), "?sort=helpful");
    expect(helpful.items.map((r) => r.text)).toEqual(["Meh", null, "Great"]);
    expect(helpful.items[0]).toMatchObject({
      helpful: 2,
      notHelpful: 0,
      author: { handle: raters[2]!.handle },
    });
    const recent = await reviewsOf(n("gamma"), "?sort=recent");
    expect(recent.items.map((r) => r.stars)).toEqual([4, 3, 5]);

    const first = await reviewsOf(n("gamma"), "?sort=recent&limit=2");
    expect(first.items).toHaveLength(2);
    expect(first.nextCursor).not.toBeNull();
    const second = await reviewsOf(n("gamma"), `?sort=recent&limit=2&cursor=${first.nextCursor}`);
    expect(second.items.map((r) => r.stars)).toEqual([5]);
    expect(second.nextCursor).toBeNull();

    expect((await api(`/v1/capsules/${n("gamma")}/reviews?sort=best`)).status).toBe(400);
    expect((await api(`/v1/capsules/${n("gamma")}/reviews?cursor=nonsense`)).status).toBe(400);
    expect((await api(`/v1/capsules/${n("gamma")}/reviews?limit=0`)).status).toBe(400);
    expect((await api(`/v1/capsules/${n("missing")}/reviews`)).status).toBe(404);
  });

  it("takes one vote per account, lets it change, and never on the voter's own review", async () => {
    const review = reviews[2]!;
    const voter = raters[4]!;
    const body = async (res: Response) => ((await res.json()) as { vote: { counts: unknown } }).vote.counts;
    expect(await body(await vote(voter, review, true))).toEqual({ helpful: 1, notHelpful: 0 });
    expect(await body(await vote(voter, review, true))).toEqual({ helpful: 1, notHelpful: 0 });
    expect(await body(await vote(voter, review, false))).toEqual({ helpful: 0, notHelpful: 1 });
    const votes = await env.DB.prepare(
      "SELECT count(*) AS n FROM review_votes WHERE review_id = ? AND account_id = ?",
    )
      .bind(review.id, voter.id)
      .first<{ n: number }>();
    expect(votes?.n).toBe(1);

    const own = await vote(raters[3]!, review, true);
    expect(own.status).toBe(403);
    expect((await vote(voter, review, "yes")).status).toBe(400);
    expect(
      (await post(`/v1/capsules/${review.capsule}/reviews/${review.id}/vote`, undefined, { helpful: true }))
        .status,
    ).toBe(401);
    expect(
      (
        await post(`/v1/capsules/${review.capsule}/reviews/rev_${"0".repeat(32)}/vote`, voter.apiKey, {
          helpful: true,
        })
      ).status,
    ).toBe(404);
    expect(
      (await post(`/v1/capsules/${review.capsule}/reviews/not-an-id/vote`, voter.apiKey, { helpful: true }))
        .status,
    ).toBe(400);
    // A review id under another capsule's path is not found there.
    expect(
      (await post(`/v1/capsules/${n("alpha")}/reviews/${review.id}/vote`, voter.apiKey, { helpful: true }))
        .status,
    ).toBe(404);
    const [after] = (await reviewsOf(n("gamma"), "?sort=recent")).items;
    expect(after).toMatchObject({ id: review.id, helpful: 0, notHelpful: 1 });
  });

  it("lets the capsule's owner reply once, publicly, and edit the reply", async () => {
    const review = reviews[0]!;
    const path = `/v1/capsules/${review.capsule}/reviews/${review.id}/reply`;
    const first = await post(path, author.apiKey, { text: "Thanks <3" });
    expect(first.status).toBe(201);
    const replied = ((await first.json()) as { review: Review }).review;
    expect(replied.reply).toMatchObject({ text: "Thanks <3", textHtml: "Thanks &lt;3" });
    await tick();
    const again = await post(path, author.apiKey, { text: "Fixed in 1.1" });
    expect(again.status).toBe(200);
    const edited = ((await again.json()) as { review: Review }).review;
    expect(edited.reply).toMatchObject({ text: "Fixed in 1.1", createdAt: replied.reply!.createdAt });
    expect(edited.reply!.updatedAt > replied.reply!.updatedAt).toBe(true);
    const listed = (await reviewsOf(n("gamma"), "?sort=recent")).items.find((r) => r.id === review.id);
    expect(listed?.reply?.text).toBe("Fixed in 1.1");

    const stranger = await post(path, raters[2]!.apiKey, { text: "I am not the author" });
    expect(stranger.status).toBe(403);
    expect((await post(path, undefined, { text: "x" })).status).toBe(401);
    expect((await post(path, author.apiKey, { text: " " })).status).toBe(400);
    expect((await post(path, author.apiKey, { text: "x".repeat(2001) })).status).toBe(400);
    const after = (await reviewsOf(n("gamma"), "?sort=recent")).items.find((r) => r.id === review.id);
    expect(after?.reply?.text).toBe("Fixed in 1.1");
  });

  it("rate limits review writes per account, and a refused write changes nothing", async () => {
    const target = (await reviewsOf(n("beta"), "?sort=recent")).items[0]!;
    const voter = await signup();
    // Windows align to the wall clock: start well inside one so all the writes below share it.
    const intoWindow = Date.now() % 60_000;
    if (intoWindow > 45_000) await new Promise((r) => setTimeout(r, 60_000 - intoWindow + 100));
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await vote(voter, target, i % 2 === 0)).status);
    expect(statuses.every((s) => s === 200)).toBe(true);
    // The 20th vote said "not helpful"; the refused 21st says "helpful".
    const refused = await vote(voter, target, true);
    expect(refused.status).toBe(429);
    expect((await errorOf(refused)).code).toBe("RATE_LIMITED");
    const row = await env.DB.prepare(
      "SELECT helpful FROM review_votes WHERE review_id = ? AND account_id = ?",
    )
      .bind(target.id, voter.id)
      .first<{ helpful: number }>();
    expect(row?.helpful).toBe(0);
  }, 90_000);
});

describe("reports and moderation", () => {
  let reviewer: Account;
  beforeAll(async () => {
    reviewer = await signup();
    await grantRoles(reviewer.handle, ["reviewer"]);
  });

  const report = (account: Account | undefined, review: Review, reason: unknown) =>
    post(`/v1/capsules/${review.capsule}/reviews/${review.id}/report`, account?.apiKey, { reason });
  const decide = (token: string | undefined, reviewId: string, decision: unknown) =>
    post(`/v1/moderation/${reviewId}`, token, { decision });

  interface Queue {
    items: {
      review: Review;
      openReports: number;
      reports: { reporter: { handle: string }; reason: string }[];
    }[];
  }
  async function queue(): Promise<Queue> {
    const res = await api("/v1/moderation?limit=100", { token: reviewer.apiKey });
    expect(res.status).toBe(200);
    return (await res.json()) as Queue;
  }

  it(`hides a review after ${REVIEW_REPORT_THRESHOLD} reports from different accounts until a moderator restores it`, async () => {
    const review = await rateOrFail(raters[4]!, n("delta"), { stars: 2, text: "Broke my build" });
    const reporters = await Promise.all(Array.from({ length: REVIEW_REPORT_THRESHOLD }, () => signup()));
    for (const reporter of reporters.slice(0, -1)) {
      expect((await report(reporter, review, "spam")).status).toBe(201);
    }
    expect((await reviewsOf(n("delta"))).items.map((r) => r.id)).toContain(review.id);
    const pending = (await queue()).items.find((item) => item.review.id === review.id);
    expect(pending).toMatchObject({
      openReports: REVIEW_REPORT_THRESHOLD - 1,
      review: { status: "visible" },
    });

    const duplicate = await report(reporters[0], review, "spam again");
    expect(duplicate.status).toBe(409);
    expect((await report(raters[4], review, "hide my own")).status).toBe(403);
    expect((await report(reporters[0], review, "")).status).toBe(400);
    expect((await report(undefined, review, "spam")).status).toBe(401);

    expect((await report(reporters.at(-1), review, "off-topic <b>")).status).toBe(201);
    expect((await reviewsOf(n("delta"))).items.map((r) => r.id)).not.toContain(review.id);
    const [first] = (await queue()).items;
    expect(first).toMatchObject({
      openReports: REVIEW_REPORT_THRESHOLD,
      review: { id: review.id, status: "hidden" },
    });
    expect(first!.reports).toHaveLength(REVIEW_REPORT_THRESHOLD);
    expect(first!.reports.map((r) => r.reporter.handle).sort()).toEqual(
      reporters.map((r) => r.handle).sort(),
    );
    // Hidden pending a decision, its stars still count: reports alone cannot bury a rating.
    expect((await ratingOf(n("delta"))).count).toBe(1);
    // Once hidden it takes no more reports, votes or replies.
    expect((await report(await signup(), review, "spam")).status).toBe(404);

    const restored = await decide(reviewer.apiKey, review.id, "restore");
    expect(restored.status).toBe(200);
    expect(((await restored.json()) as { review: Review }).review.status).toBe("visible");
    expect((await reviewsOf(n("delta"))).items.map((r) => r.id)).toContain(review.id);
    expect((await queue()).items.map((item) => item.review.id)).not.toContain(review.id);
    // Those reporters had their say; the same accounts cannot hide it again.
    expect((await report(reporters[0], review, "spam")).status).toBe(409);

    expect(await eventsInClickHouse("soma.review.reported", n("delta"), REVIEW_REPORT_THRESHOLD)).toBe(
      REVIEW_REPORT_THRESHOLD,
    );
  }, 60_000);

  it("removes a review for good and takes it out of the capsule's rating", async () => {
    const review = await rateOrFail(raters[5]!, n("delta"), {
      stars: 1,
      text: "Buy my course at example.com",
    });
    expect((await ratingOf(n("delta"))).count).toBe(2);
    const removed = await decide(reviewer.apiKey, review.id, "remove");
    expect(removed.status).toBe(200);
    expect(((await removed.json()) as { review: Review }).review.status).toBe("removed");
    expect(await ratingOf(n("delta"))).toMatchObject({ count: 1, average: 2 });
    expect(await capsuleRow(n("delta"))).toMatchObject({ rating_count: 1 });
    expect((await reviewsOf(n("delta"))).items.map((r) => r.id)).not.toContain(review.id);
    // The author can neither edit it back nor delete it to rate afresh.
    expect((await rate(raters[5]!, n("delta"), { stars: 5 })).status).toBe(403);
    expect(
      (await api(`/v1/capsules/${n("delta")}/rating`, { method: "DELETE", token: raters[5]!.apiKey })).status,
    ).toBe(403);
    expect((await decide(reviewer.apiKey, review.id, "restore")).status).toBe(409);
    expect((await decide(adminToken(), review.id, "remove")).status).toBe(409);
  });

  it("is for reviewers and admins only, with a valid decision about a review that needs one", async () => {
    const user = raters[0]!;
    expect((await api("/v1/moderation", { token: user.apiKey })).status).toBe(403);
    expect((await api("/v1/moderation")).status).toBe(401);
    expect((await api("/v1/moderation", { token: adminToken() })).status).toBe(200);
    expect((await api("/v1/moderation?limit=500", { token: reviewer.apiKey })).status).toBe(400);

    const clean = (await reviewsOf(n("alpha"))).items[0]!;
    const before = await ratingOf(n("alpha"));
    expect((await decide(user.apiKey, clean.id, "remove")).status).toBe(403);
    expect((await decide(undefined, clean.id, "remove")).status).toBe(401);
    expect((await decide(reviewer.apiKey, clean.id, "delete")).status).toBe(400);
    expect((await decide(reviewer.apiKey, "rev_nope", "remove")).status).toBe(400);
    expect((await decide(reviewer.apiKey, `rev_${"0".repeat(32)}`, "remove")).status).toBe(404);
    expect((await decide(reviewer.apiKey, clean.id, "restore")).status).toBe(409);
    expect(await ratingOf(n("alpha"))).toEqual(before);
  });
});

interface Collection {
  id: string;
  title: string;
  visibility: string;
  curated: boolean;
  owner: { handle: string } | null;
  itemCount: number;
  items?: { capsule: CatalogItem; addedAt: string }[];
}

describe("collections", () => {
  const create = (token: string | undefined, json: unknown) => post("/v1/collections", token, json);
  async function createOrFail(token: string, json: unknown): Promise<Collection> {
    const res = await create(token, json);
    if (res.status !== 201) throw new Error(`collection: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { collection: Collection }).collection;
  }
  async function listAs(token?: string): Promise<Collection[]> {
    const res = await api("/v1/collections?limit=100", token ? { token } : {});
    expect(res.status).toBe(200);
    return ((await res.json()) as { items: Collection[] }).items;
  }

  it("shows a private collection only to its owner and lists curated collections first", async () => {
    const owner = await signup();
    const other = await signup();
    const curated = await createOrFail(adminToken(), {
      title: "Staff picks",
      visibility: "public",
      curated: true,
    });
    expect(curated).toMatchObject({ curated: true, owner: null });
    const secret = await createOrFail(owner.apiKey, { title: "My drafts", visibility: "private" });
    const shared = await createOrFail(owner.apiKey, { title: "Python tools", visibility: "public" });
    expect(shared).toMatchObject({ owner: { handle: owner.handle }, itemCount: 0, curated: false });

    expect((await api(`/v1/collections/${secret.id}`, { token: owner.apiKey })).status).toBe(200);
    expect((await api(`/v1/collections/${secret.id}`, { token: other.apiKey })).status).toBe(404);
    expect((await api(`/v1/collections/${secret.id}`)).status).toBe(404);
    expect((await api(`/v1/collections/${shared.id}`)).status).toBe(200);

    const anonymous = await listAs();
    const ids = anonymous.map((c) => c.id);
    expect(ids).toContain(shared.id);
    expect(ids).not.toContain(secret.id);
    expect(ids.indexOf(curated.id)).toBeLessThan(ids.indexOf(shared.id));
    const firstPlain = anonymous.findIndex((c) => !c.curated);
    expect(anonymous.slice(firstPlain).every((c) => !c.curated)).toBe(true);
    expect((await listAs(other.apiKey)).map((c) => c.id)).not.toContain(secret.id);
    expect((await listAs(owner.apiKey)).map((c) => c.id)).toEqual(
      expect.arrayContaining([secret.id, shared.id]),
    );
  });

  it("validates new collections and keeps curation to admins", async () => {
    const user = await signup();
    const before = await countRows("collections");
    expect((await create(user.apiKey, { title: "x", visibility: "public", curated: true })).status).toBe(403);
    expect((await create(adminToken(), { title: "x", visibility: "private", curated: true })).status).toBe(
      400,
    );
    expect((await create(adminToken(), { title: "x", visibility: "public" })).status).toBe(403);
    expect((await create(user.apiKey, { title: " ", visibility: "public" })).status).toBe(400);
    expect((await create(user.apiKey, { title: "x", visibility: "friends" })).status).toBe(400);
    expect((await create(user.apiKey, { title: "x".repeat(101), visibility: "public" })).status).toBe(400);
    expect((await create(undefined, { title: "x", visibility: "public" })).status).toBe(401);
    expect(await countRows("collections")).toBe(before);
    expect((await api("/v1/collections/col_nope")).status).toBe(400);
    expect((await api(`/v1/collections/col_${"0".repeat(32)}`)).status).toBe(404);
  });

  it("lets only the owner or an admin change a collection and its capsules", async () => {
    const owner = await signup();
    const other = await signup();
    const col = await createOrFail(owner.apiKey, { title: "Favourites", visibility: "public" });
    const priv = await createOrFail(owner.apiKey, { title: "Hidden", visibility: "private" });
    const items = `/v1/collections/${col.id}/items`;

    expect((await post(items, owner.apiKey, { capsule: n("alpha") })).status).toBe(201);
    await tick();
    expect((await post(items, adminToken(), { capsule: n("beta") })).status).toBe(201);
    expect((await post(items, owner.apiKey, { capsule: n("alpha") })).status).toBe(409);
    expect((await post(items, owner.apiKey, { capsule: n("missing") })).status).toBe(404);
    expect((await post(items, owner.apiKey, { capsule: "Not A Name" })).status).toBe(400);
    expect((await post(items, other.apiKey, { capsule: n("gamma") })).status).toBe(403);
    expect(
      (await post(`/v1/collections/${priv.id}/items`, other.apiKey, { capsule: n("gamma") })).status,
    ).toBe(404);
    expect((await post(items, undefined, { capsule: n("gamma") })).status).toBe(401);

    const detail = async () =>
      ((await (await api(`/v1/collections/${col.id}`)).json()) as { collection: Collection }).collection;
    const full = await detail();
    expect(full.itemCount).toBe(2);
    expect(full.items!.map((i) => i.capsule.name)).toEqual([n("alpha"), n("beta")]);

    const remove = (token: string, name: string) => api(`${items}/${name}`, { method: "DELETE", token });
    expect((await remove(other.apiKey, n("alpha"))).status).toBe(403);
    expect((await remove(owner.apiKey, n("alpha"))).status).toBe(204);
    expect((await remove(owner.apiKey, n("alpha"))).status).toBe(404);
    expect((await detail()).items!.map((i) => i.capsule.name)).toEqual([n("beta")]);

    const put = (token: string, json: unknown) =>
      api(`/v1/collections/${col.id}`, { method: "PUT", token, json });
    const renamed = await put(owner.apiKey, { title: "Daily drivers", description: "What I use" });
    expect(renamed.status).toBe(200);
    expect(((await renamed.json()) as { collection: Collection }).collection).toMatchObject({
      title: "Daily drivers",
      itemCount: 1,
    });
    expect((await put(other.apiKey, { title: "Mine now" })).status).toBe(403);
    expect((await put(owner.apiKey, {})).status).toBe(400);
    expect((await put(owner.apiKey, { curated: true })).status).toBe(403);
    expect((await put(adminToken(), { curated: true, visibility: "private" })).status).toBe(400);
    expect((await put(adminToken(), { curated: true })).status).toBe(200);
    // Curated now: it speaks for the platform, so its creator can no longer change it.
    expect((await put(owner.apiKey, { title: "Back to mine" })).status).toBe(403);
    expect((await detail()).title).toBe("Daily drivers");

    expect((await api(`/v1/collections/${priv.id}`, { method: "DELETE", token: other.apiKey })).status).toBe(
      404,
    );
    expect((await api(`/v1/collections/${priv.id}`, { method: "DELETE", token: owner.apiKey })).status).toBe(
      204,
    );
    expect((await api(`/v1/collections/${priv.id}`, { token: owner.apiKey })).status).toBe(404);
  });
});

describe("featured", () => {
  const put = (token: string | undefined, json: unknown) =>
    api("/v1/featured", { method: "PUT", json, ...(token ? { token } : {}) });
  const names = async () =>
    (
      (await (await api("/v1/featured")).json()) as { items: { capsule: CatalogItem; position: number }[] }
    ).items.map((item) => item.capsule.name);

  it("shows the admins' picks in the order picked and refuses anyone else or unknown capsules", async () => {
    const res = await put(adminToken(), { capsules: [n("beta"), n("alpha"), n("gamma")] });
    expect(res.status).toBe(200);
    expect(await names()).toEqual([n("beta"), n("alpha"), n("gamma")]);

    const user = raters[0]!;
    expect((await put(user.apiKey, { capsules: [n("delta")] })).status).toBe(403);
    expect((await put(undefined, { capsules: [n("delta")] })).status).toBe(401);
    const unknown = await put(adminToken(), { capsules: [n("delta"), n("missing")] });
    expect(unknown.status).toBe(404);
    expect((await errorOf(unknown)).details).toEqual({ missing: [n("missing")] });
    expect((await put(adminToken(), { capsules: [n("delta"), n("delta")] })).status).toBe(400);
    expect((await put(adminToken(), { capsules: "alpha" })).status).toBe(400);
    expect(await names()).toEqual([n("beta"), n("alpha"), n("gamma")]);

    expect((await put(adminToken(), { capsules: [n("delta")] })).status).toBe(200);
    expect(await names()).toEqual([n("delta")]);
    expect((await put(adminToken(), { capsules: [] })).status).toBe(200);
    expect(await names()).toEqual([]);
  });

  it("puts the featured capsules first when browsing the catalog in its default order", async () => {
    expect((await put(adminToken(), { capsules: [n("gamma"), n("beta")] })).status).toBe(200);
    const browse = async (query: string) =>
      (await (await api(`/v1/capsules?${query}`)).json()) as {
        items: (CatalogItem & { installCount: number })[];
        nextCursor: string | null;
      };
    // Catalog pages are cached per URL for a few seconds: each URL here is read only by this test.
    const first = await browse("limit=97");
    expect(first.items.slice(0, 2).map((c) => c.name)).toEqual([n("gamma"), n("beta")]);
    const rest = first.items.slice(2);
    expect(rest.map((c) => c.name)).not.toContain(n("gamma"));
    for (let i = 1; i < rest.length; i++) {
      expect(rest[i - 1]!.installCount).toBeGreaterThanOrEqual(rest[i]!.installCount);
    }
    // Pages follow the same order.
    const one = await browse("limit=1");
    expect(one.items.map((c) => c.name)).toEqual([n("gamma")]);
    const two = await browse(`limit=1&cursor=${one.nextCursor}`);
    expect(two.items.map((c) => c.name)).toEqual([n("beta")]);
    // An explicit sort or a search is the caller's order, not the shelf's.
    const byName = (await browse("limit=96&sort=name")).items.map((c) => c.name);
    expect(byName).toEqual([...byName].sort());
    expect((await put(adminToken(), { capsules: [] })).status).toBe(200);
  });
});

describe("GET /v1/trending", () => {
  it("ranks by time-decayed installs and executions of the last week, one signal per account and day", async () => {
    const capsules = ["t-hot", "t-warm", "t-spam", "t-old", "t-ancient"].map(n);
    for (const capsule of capsules) await publishWorker(author.apiKey, capsule, QUICK);
    const [hot, warm, spam, old, ancient] = capsules as [string, string, string, string, string];
    const fans = await Promise.all(Array.from({ length: 4 }, () => signup()));
    for (const fan of fans.slice(0, 3)) await installOrFail(fan, hot);
    for (const fan of fans.slice(0, 2)) await installOrFail(fan, warm);
    // One account installing five times is one signal.
    for (let i = 0; i < 5; i++) await installOrFail(fans[3]!, spam);
    for (const fan of fans) await installOrFail(fan, old);
    for (const fan of fans) await installOrFail(fan, ancient);
    const daysAgo = (days: number) => new Date(Date.now() - days * 86_400_000).toISOString();
    // Four installs three days ago weigh 4 * exp(-1.5) = 0.89, less than the one fresh install of t-spam.
    await env.DB.prepare("UPDATE installs SET created_at = ? WHERE capsule_name = ?")
      .bind(daysAgo(3), old)
      .run();
    await env.DB.prepare("UPDATE installs SET created_at = ? WHERE capsule_name = ?")
      .bind(daysAgo(8), ancient)
      .run();

    // Answers are cached per URL for a minute; this test is the only reader of this one.
    const res = await api("/v1/trending?limit=100");
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      items: { capsule: CatalogItem; score: number; installs: number; executions: number }[];
      windowDays: number;
    };
    expect(body.windowDays).toBe(7);
    const ranked = body.items.map((item) => item.capsule.name).filter((name) => capsules.includes(name));
    expect(ranked).toEqual([hot, warm, spam, old]);
    const scoreOf = (name: string) => body.items.find((item) => item.capsule.name === name)!;
    expect(scoreOf(hot)).toMatchObject({ installs: 3, executions: 0 });
    expect(scoreOf(hot).score).toBeCloseTo(3, 2);
    expect(scoreOf(spam)).toMatchObject({ installs: 1 });
    expect(scoreOf(old).score).toBeCloseTo(4 * Math.exp(-1.5), 2);
    // Executions count too: six raters installed and ran alpha.
    expect(scoreOf(n("alpha"))).toMatchObject({ installs: 6, executions: 6 });
    expect(scoreOf(n("alpha")).score).toBeGreaterThan(scoreOf(hot).score);

    expect((await api("/v1/trending?limit=0")).status).toBe(400);
    expect((await api("/v1/trending?limit=lots")).status).toBe(400);
    expect((await api("/v1/trending?since=yesterday")).status).toBe(400);
  });
});

describe("GET /v1/capsules/:ns/:name/used-together", () => {
  it("lists what the capsule's installers also have installed, most shared first", async () => {
    const capsules = ["ut-base", "ut-a", "ut-b", "ut-c", "ut-gone"].map(n);
    for (const capsule of capsules) await publishWorker(author.apiKey, capsule, QUICK);
    const [base, a, b, c, gone] = capsules as [string, string, string, string, string];
    const users = await Promise.all(Array.from({ length: 4 }, () => signup()));
    for (const user of users.slice(0, 3)) await installOrFail(user, base);
    await installOrFail(users[0]!, a);
    await installOrFail(users[1]!, a);
    await installOrFail(users[0]!, b);
    await installOrFail(users[2]!, c);
    // Removed installs no longer tie capsules together, and a non-installer's installs never did.
    const removed = await installOrFail(users[2]!, gone);
    expect((await api(`/v1/installs/${removed}`, { method: "DELETE", token: users[2]!.apiKey })).status).toBe(
      204,
    );
    await installOrFail(users[3]!, gone);

    const res = await api(`/v1/capsules/${base}/used-together`);
    expect(res.status).toBe(200);
    const items = ((await res.json()) as { items: { capsule: CatalogItem; accounts: number }[] }).items;
    expect(items.map((item) => [item.capsule.name, item.accounts])).toEqual([
      [a, 2],
      [b, 1],
      [c, 1],
    ]);

    expect((await api(`/v1/capsules/${n("missing")}/used-together`)).status).toBe(404);
    expect((await api(`/v1/capsules/${base}/used-together?limit=51`)).status).toBe(400);
  });
});
