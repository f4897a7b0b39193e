import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import worker from "../../workers/index";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import { sql } from "../../workers/shared/analytics/sql";
import { database } from "../../workers/shared/db/client";
import { sha256Hex } from "../../workers/shared/encoding";
import { flushOutbox } from "../../workers/shared/events/outbox";
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
  it("re-sends outbox events left behind by an interrupted request and removes them once stored", async () => {
    const old = new Date(Date.now() - 120_000).toISOString();
    const event = {
      specversion: "1.0",
      id: `evt_stranded_${crypto.randomUUID()}`,
      source: "soma://api",
      type: "soma.test.stranded",
      time: old,
      data: {},
    };
    await env.DB.prepare("INSERT INTO outbox (id, body, created_at) VALUES (?, ?, ?)")
      .bind(event.id, JSON.stringify(event), old)
      .run();
    const fresh = new Date().toISOString();
    const freshId = `evt_fresh_${crypto.randomUUID()}`;
    await env.DB.prepare("INSERT INTO outbox (id, body, created_at) VALUES (?, ?, ?)")
      .bind(freshId, JSON.stringify({ ...event, id: freshId, time: fresh }), fresh)
      .run();
    await runCron();
    const row = (id: string) =>
      env.DB.prepare("SELECT sent_at, stored_at FROM outbox WHERE id = ?")
        .bind(id)
        .first<{ sent_at: string | null; stored_at: string | null }>();
    // The fresh row belongs to a request whose own hand-off may still be running; the cron leaves it alone.
    expect(await row(freshId)).toEqual({ sent_at: null, stored_at: null });
    // The stranded one is sent and stays until the analytics consumer confirms it stored.
    expect((await row(event.id))?.sent_at).not.toBeNull();
    const deadline = Date.now() + 15_000;
    while (!(await row(event.id))?.stored_at && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    expect((await row(event.id))?.stored_at).not.toBeNull();
    await runCron();
    expect(await row(event.id)).toBeNull();
    expect(await row(freshId)).not.toBeNull();
  });

  it("sends again a row handed to the queue whose event was never confirmed stored", async () => {
    const long = new Date(Date.now() - 10 * 60_000).toISOString();
    const id = `evt_lost_${crypto.randomUUID()}`;
    const event = {
      specversion: "1.0",
      id,
      source: "soma://api",
      type: "soma.test.lost",
      time: long,
      data: {},
    };
    // Sent ten minutes ago, but the message never reached the consumer (a queue that lost it).
    await env.DB.prepare("INSERT INTO outbox (id, body, created_at, sent_at) VALUES (?, ?, ?, ?)")
      .bind(id, JSON.stringify(event), long, long)
      .run();
    await runCron();
    const sentAt = await env.DB.prepare("SELECT sent_at FROM outbox WHERE id = ?")
      .bind(id)
      .first<string>("sent_at");
    expect(sentAt && sentAt > long).toBe(true);
    const resends = await env.DB.prepare("SELECT resends FROM outbox WHERE id = ?")
      .bind(id)
      .first<number>("resends");
    expect(resends).toBe(1);
    const copies = () =>
      queryRows(
        env,
        sql`SELECT count() AS n FROM events WHERE id = ${id}`,
        z.object({ n: z.coerce.number() }),
      );
    const deadline = Date.now() + 15_000;
    let [stored] = await copies();
    while ((stored?.n ?? 0) === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      [stored] = await copies();
    }
    expect(stored?.n).toBe(1);
  });

  it("waits twice as long before each further resend of a row that stays unconfirmed", async () => {
    const tenMinutesAgo = new Date(Date.now() - 10 * 60_000).toISOString();
    const insert = async (resends: number) => {
      const id = `evt_backoff_${resends}_${crypto.randomUUID()}`;
      const event = {
        specversion: "1.0",
        id,
        source: "soma://api",
        type: "soma.test.lost",
        time: tenMinutesAgo,
        data: {},
      };
      await env.DB.prepare(
        "INSERT INTO outbox (id, body, created_at, sent_at, resends) VALUES (?, ?, ?, ?, ?)",
      )
        .bind(id, JSON.stringify(event), tenMinutesAgo, tenMinutesAgo, resends)
        .run();
      return id;
    };
    // The waits are 2, 4, 8, 16 ... minutes: sent again twice, a row is due after 8; three times, after 16.
    const due = await insert(2);
    const waiting = await insert(3);
    await runCron();
    const row = (id: string) =>
      env.DB.prepare("SELECT sent_at, resends FROM outbox WHERE id = ?")
        .bind(id)
        .first<{ sent_at: string; resends: number }>();
    const resent = await row(due);
    expect(resent?.sent_at && resent.sent_at > tenMinutesAgo).toBe(true);
    expect(resent?.resends).toBe(3);
    expect(await row(waiting)).toEqual({ sent_at: tenMinutesAgo, resends: 3 });
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

describe("outbox hand-off", () => {
  it("packs the rows of one flush into one queue message that the consumer stores and confirms", async () => {
    const now = new Date().toISOString();
    const traces = [
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      undefined,
    ];
    const events = traces.map((traceparent, i) => ({
      specversion: "1.0",
      id: `evt_packed_${i}_${crypto.randomUUID()}`,
      source: "soma://api",
      type: "soma.test.packed",
      time: now,
      data: { n: i },
      ...(traceparent ? { traceparent } : {}),
    }));
    for (const event of events) {
      await env.DB.prepare("INSERT INTO outbox (id, body, created_at) VALUES (?, ?, ?)")
        .bind(event.id, JSON.stringify(event), now)
        .run();
    }
    // The real queue, with what is handed to it written down on the way.
    const sent: { body: unknown; contentType?: string }[] = [];
    const recordingQueue = {
      send: env.EVENTS.send.bind(env.EVENTS),
      sendBatch: async (messages: Iterable<MessageSendRequest>) => {
        const list = [...messages];
        sent.push(...list.map((m) => ({ body: m.body, contentType: m.contentType })));
        return env.EVENTS.sendBatch(list);
      },
    } as Queue;
    const count = await flushOutbox(database(env.DB), { DB: env.DB, EVENTS: recordingQueue });
    expect(count).toBeGreaterThanOrEqual(3);
    // Fewer messages than events: one envelope carries them (rows other tests left unsent may share it).
    expect(sent.length).toBeLessThan(count);
    const envelopes = sent.map((m) => {
      expect(m.contentType).toBe("text");
      return JSON.parse(m.body as string) as {
        events: { id: string; traceparent?: string }[];
        traceparent?: string;
      };
    });
    const carrying = envelopes.filter((e) => e.events.some((x) => events.some((y) => y.id === x.id)));
    expect(carrying).toHaveLength(1);
    const [envelope] = carrying;
    // No envelope trace: each event keeps the trace of the request that wrote it.
    expect(envelope?.traceparent).toBeUndefined();
    for (const event of events) expect(envelope?.events).toContainEqual(event);
    const storedAt = (id: string) =>
      env.DB.prepare("SELECT stored_at FROM outbox WHERE id = ?").bind(id).first<string | null>("stored_at");
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const stored = await Promise.all(events.map((e) => storedAt(e.id)));
      if (stored.every((s) => s !== null)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const event of events) expect(await storedAt(event.id)).not.toBeNull();
    const rows = await queryRows(
      env,
      sql`SELECT id FROM events WHERE id IN ${events.map((e) => e.id)}`,
      z.object({ id: z.string() }),
    );
    expect(rows.map((r) => r.id).sort()).toEqual(events.map((e) => e.id).sort());
  });
});
