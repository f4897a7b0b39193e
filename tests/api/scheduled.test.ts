import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../workers/index";
import { sha256Hex } from "../../workers/shared/encoding";
import { api, bundle, countRows, type SubmissionBody, signup, upload } from "../helpers";

async function runCron(): Promise<void> {
  const ctx = createExecutionContext();
  await worker.scheduled(
    createScheduledController({ cron: "* * * * *", scheduledTime: Date.now() }),
    env,
    ctx,
  );
  await waitOnExecutionContext(ctx);
}

describe("scheduled recovery", () => {
  it("re-sends outbox events left behind by an interrupted request and removes them", async () => {
    const old = new Date(Date.now() - 120_000).toISOString();
    const event = {
      specversion: "1.0",
      id: "evt_stranded",
      source: "soma://api",
      type: "soma.test.stranded",
      time: old,
      data: {},
    };
    await env.DB.prepare("INSERT INTO outbox (id, body, created_at) VALUES (?, ?, ?)")
      .bind(event.id, JSON.stringify(event), old)
      .run();
    const fresh = new Date().toISOString();
    await env.DB.prepare("INSERT INTO outbox (id, body, created_at) VALUES (?, ?, ?)")
      .bind("evt_fresh", JSON.stringify({ ...event, id: "evt_fresh", time: fresh }), fresh)
      .run();
    await runCron();
    const left = await env.DB.prepare("SELECT id FROM outbox ORDER BY id").all<{ id: string }>();
    // The fresh row belongs to a request whose own hand-off may still be running; the cron leaves it alone.
    expect(left.results.map((r) => r.id)).toEqual(["evt_fresh"]);
  });

  it("closes an approved submission whose version another submission already published, keeping its bytes", async () => {
    const author = await signup();
    const name = `${author.handle}/published-once`;
    const first = (await (await upload(author.apiKey, await bundle({ name }))).json()) as SubmissionBody;
    expect(first.submission.status).toBe("published");
    const before = await (await api(`/v1/capsules/${name}/versions/1.0.0/bundle`)).arrayBuffer();
    // An approved duplicate as it could exist before open submissions were unique per name@version; the
    // first row steps out of the unique index so the duplicate can be written at all.
    const legacyId = "sub_legacy_duplicate";
    await env.DB.prepare("UPDATE submissions SET status = 'superseded' WHERE id = ?")
      .bind(first.submission.id)
      .run();
    await env.DB.prepare(
      `INSERT INTO submissions (id, account_id, name, version, status, risk_score, findings, manifest, sha256, size,
         bundle_key, reviewer_id, decision_notes, decided_at, created_at)
       SELECT ?, account_id, name, version, 'approved', risk_score, findings, manifest, 'f00d', size,
         bundle_key, reviewer_id, decision_notes, ?, created_at FROM submissions WHERE id = ?`,
    )
      .bind(legacyId, new Date(Date.now() - 120_000).toISOString(), first.submission.id)
      .run();
    await runCron();
    const legacy = await env.DB.prepare(
      "SELECT status, decision_notes AS notes FROM submissions WHERE id = ?",
    )
      .bind(legacyId)
      .first<{ status: string; notes: string }>();
    expect(legacy?.status).toBe("rejected");
    expect(legacy?.notes).toContain(first.submission.id);
    const after = await (await api(`/v1/capsules/${name}/versions/1.0.0/bundle`)).arrayBuffer();
    expect(await sha256Hex(new Uint8Array(after))).toBe(await sha256Hex(new Uint8Array(before)));
  });

  it("finishes publishing a submission approved just before a crash", async () => {
    const author = await signup();
    const name = `${author.handle}/interrupted`;
    const res = await upload(
      author.apiKey,
      await bundle({ name }, [{ name: "dist/x.js", body: "export const f = (s) => eval(s);\n" }]),
    );
    const { submission } = (await res.json()) as SubmissionBody;
    expect(submission.status).toBe("pending_review");
    // The decision was recorded, then the isolate died before publishing.
    await env.DB.prepare(
      "UPDATE submissions SET status = 'approved', reviewer_id = 'soma:admin-token', decided_at = ? WHERE id = ?",
    )
      .bind(new Date(Date.now() - 120_000).toISOString(), submission.id)
      .run();
    expect((await api(`/v1/capsules/${name}`)).status).toBe(404);
    await runCron();
    expect((await api(`/v1/capsules/${name}`)).status).toBe(200);
    const row = await env.DB.prepare("SELECT status FROM submissions WHERE id = ?")
      .bind(submission.id)
      .first<{ status: string }>();
    expect(row?.status).toBe("published");
    const versions = await countRows("capsule_versions");
    await runCron();
    expect(await countRows("capsule_versions")).toBe(versions);
  });
});
