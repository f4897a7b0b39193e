import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import worker from "../../workers/index";
import { queryRows } from "../../workers/shared/analytics/clickhouse";
import {
  ingestEvents,
  resendSpooled,
  SPOOL_PREFIX,
  SPOOL_RESEND_MS,
} from "../../workers/shared/analytics/ingest";
import { sql } from "../../workers/shared/analytics/sql";
import { packEvents } from "../../workers/shared/events/pack";
import { api, signup } from "../helpers";

const unique = () => crypto.randomUUID().replace(/-/g, "");

function usageEvent(
  accountId: string,
  inputTokens: number,
  outputTokens: number,
  time = new Date().toISOString(),
) {
  return {
    specversion: "1.0" as const,
    id: `evt_${unique()}`,
    source: "soma://test",
    type: "soma.usage.tokens",
    time,
    subject: "test",
    data: { accountId, inputTokens, outputTokens, capsule: "acme/tool", model: "none" },
  };
}

async function deliver(bodies: unknown[], overrides: Partial<Env> = {}) {
  const batch = createMessageBatch(
    "soma-events",
    bodies.map((body, i) => ({ id: `msg-${unique()}-${i}`, timestamp: new Date(), attempts: 1, body })),
  );
  const ctx = createExecutionContext();
  await worker.queue(batch, { ...env, ...overrides }, ctx);
  return getQueueResult(batch, ctx);
}

const count = z.object({ events: z.coerce.number(), tokens: z.coerce.number() });

async function totals(accountId: string) {
  const [raw] = await queryRows(
    env,
    sql`SELECT count() AS events, sum(input_tokens + output_tokens) AS tokens FROM events WHERE account_id = ${accountId}`,
    count,
  );
  const [rollup] = await queryRows(
    env,
    sql`SELECT sum(events) AS events, sum(input_tokens + output_tokens) AS tokens FROM usage_hourly WHERE account_id = ${accountId}`,
    count,
  );
  return { raw, rollup };
}

describe("events consumer", () => {
  it("stores a batch in one insert and acknowledges every message", async () => {
    const account = `acc_${unique()}`;
    const result = await deliver([
      usageEvent(account, 10, 5),
      usageEvent(account, 20, 10),
      usageEvent(account, 1, 1),
    ]);
    expect(result.explicitAcks).toHaveLength(3);
    expect(result.retryMessages).toEqual([]);
    expect(await totals(account)).toEqual({
      raw: { events: 3, tokens: 47 },
      rollup: { events: 3, tokens: 47 },
    });
  });

  it("never counts a redelivered batch twice, in raw rows or rollups", async () => {
    const account = `acc_${unique()}`;
    const events = [usageEvent(account, 100, 1), usageEvent(account, 200, 2)];
    await deliver(events);
    const again = await deliver([...events, events[0]]);
    expect(again.explicitAcks).toHaveLength(3);
    expect(await totals(account)).toEqual({
      raw: { events: 2, tokens: 303 },
      rollup: { events: 2, tokens: 303 },
    });
  });

  it("unpacks ingestion envelopes", async () => {
    const account = `acc_${unique()}`;
    const result = await deliver([{ events: [usageEvent(account, 1, 0), usageEvent(account, 2, 0)] }]);
    expect(result.explicitAcks).toHaveLength(1);
    expect((await totals(account)).raw).toEqual({ events: 2, tokens: 3 });
  });

  it("unpacks envelopes sent as JSON text, the way ingestion packs them, one message per 96 KiB", async () => {
    const account = `acc_${unique()}`;
    const events = Array.from({ length: 600 }, (_, i) => usageEvent(account, i, 1));
    const messages = packEvents(events, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    expect(messages.length).toBeGreaterThan(1);
    for (const m of messages)
      expect(new TextEncoder().encode(m.body).byteLength).toBeLessThanOrEqual(96 * 1024);
    const result = await deliver(messages.map((m) => m.body));
    expect(result.explicitAcks).toHaveLength(messages.length);
    expect((await totals(account)).raw).toEqual({ events: 600, tokens: (599 * 600) / 2 + 600 });
  });

  it("measures packed messages in UTF-8 bytes, not characters", async () => {
    const account = `acc_${unique()}`;
    const wide = "\u{1F600}".repeat(2000); // 4 bytes each in UTF-8, 2 UTF-16 units
    const events = Array.from({ length: 200 }, (_, i) => ({
      ...usageEvent(account, i, 0),
      subject: wide.slice(0, 500),
    }));
    const messages = packEvents(events);
    // Counted in characters the events would fit in two messages, each well over 96 KiB in bytes.
    expect(messages.length).toBeGreaterThanOrEqual(3);
    for (const m of messages) {
      expect(new TextEncoder().encode(m.body).byteLength).toBeLessThanOrEqual(96 * 1024);
    }
    expect(messages.flatMap((m) => (JSON.parse(m.body) as { events: unknown[] }).events)).toHaveLength(200);
  });

  it("parks a text message that is not JSON in the dead-letter queue and keeps the rest", async () => {
    const account = `acc_${unique()}`;
    const result = await deliver([usageEvent(account, 2, 2), '{"events":[{"specversion"']);
    expect(result.explicitAcks).toHaveLength(2);
    expect(result.retryMessages).toEqual([]);
    expect((await totals(account)).raw).toEqual({ events: 1, tokens: 4 });
  });

  it("retries the whole batch with backoff when ClickHouse is unreachable, storing nothing", async () => {
    const account = `acc_${unique()}`;
    const result = await deliver([usageEvent(account, 5, 5)], { CLICKHOUSE_URL: "http://127.0.0.1:9" });
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryMessages).toEqual([expect.objectContaining({ msgId: expect.any(String) })]);
    expect((await totals(account)).raw).toEqual({ events: 0, tokens: 0 });
  });

  it("parks a poison message in the dead-letter queue, keeps the good ones, and replays it on demand", async () => {
    const account = `acc_${unique()}`;
    const poison = { specversion: "1.0", id: `bad_${unique()}`, type: "Not A Type", data: {} };
    const result = await deliver([usageEvent(account, 3, 4), poison]);
    expect(result.explicitAcks).toHaveLength(2);
    expect((await totals(account)).raw).toEqual({ events: 1, tokens: 7 });

    // The dead-letter consumer keeps it in D1 for an operator.
    const deadline = Date.now() + 15_000;
    let items: { id: string; reason: string; body: { id?: string } }[] = [];
    while (Date.now() < deadline) {
      const res = await api("/v1/admin/dead-letters?queue=soma-events", { token: env.SOMA_ADMIN_TOKEN });
      items = ((await res.json()) as { items: typeof items }).items;
      if (items.some((i) => i.body.id === poison.id)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const parked = items.find((i) => i.body.id === poison.id);
    expect(parked?.reason).toContain("invalid event");
    const replay = await api("/v1/admin/dead-letters/replay", {
      method: "POST",
      token: env.SOMA_ADMIN_TOKEN,
      json: { queue: "soma-events" },
    });
    expect(replay.status).toBe(200);
    expect(((await replay.json()) as { replayed: number }).replayed).toBeGreaterThanOrEqual(1);
  });

  it("keeps dead letters to admins", async () => {
    expect((await api("/v1/admin/dead-letters")).status).toBe(401);
    const user = await signup();
    expect((await api("/v1/admin/dead-letters", { token: user.apiKey })).status).toBe(403);
    expect(
      (
        await api("/v1/admin/dead-letters/replay", {
          method: "POST",
          token: env.SOMA_ADMIN_TOKEN,
          json: { queue: "nope" },
        })
      ).status,
    ).toBe(400);
  });
});

describe("ingestion spool", () => {
  const spooled = async () => (await env.BUNDLES.list({ prefix: SPOOL_PREFIX })).objects.map((o) => o.key);
  async function until(check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (!(await check()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  }

  it("keeps an accepted request's messages in R2 until the consumer stored them", async () => {
    const owner = await signup();
    const events = Array.from({ length: 5 }, (_, i) => ({
      specversion: "1.0",
      id: `spool-${unique()}-${i}`,
      source: "test://spool",
      type: "soma.usage.tokens",
      time: new Date().toISOString(),
      data: { inputTokens: 1, outputTokens: 1 },
    }));
    const res = await api("/v1/events", { method: "POST", token: owner.apiKey, json: events });
    expect(res.status).toBe(202);
    await until(async () => (await totals(owner.id)).raw?.events === 5 && (await spooled()).length === 0);
    expect((await totals(owner.id)).raw?.events).toBe(5);
    expect(await spooled()).toEqual([]);
  });

  it("sends again a spooled message the queue lost, and the consumer stores it once and releases it", async () => {
    const account = `acc_${unique()}`;
    const key = `${SPOOL_PREFIX}${crypto.randomUUID()}`;
    const [message] = packEvents(
      [usageEvent(account, 4, 2), usageEvent(account, 1, 1)],
      undefined,
      () => key,
    );
    await env.BUNDLES.put(key, message!.body);
    // Not old enough yet: left alone.
    expect(await resendSpooled(env)).toBe(0);
    expect(await resendSpooled(env, Date.now() + SPOOL_RESEND_MS)).toBe(1);
    await until(async () => (await spooled()).length === 0);
    expect(await spooled()).toEqual([]);
    // Sent again after it was stored: counted once.
    await env.BUNDLES.put(key, message!.body);
    expect(await resendSpooled(env, Date.now() + SPOOL_RESEND_MS)).toBe(1);
    await until(async () => (await spooled()).length === 0);
    expect(await totals(account)).toEqual({
      raw: { events: 2, tokens: 8 },
      rollup: { events: 2, tokens: 8 },
    });
  });

  it("spools nothing when EVENTS_SPOOL is off (queues that persist what they accept)", async () => {
    const owner = await signup();
    const plain = usageEvent(owner.id, 3, 3);
    const event = { ...plain, source: "test://no-spool", data: { inputTokens: 3, outputTokens: 3 } };
    const result = await ingestEvents({ ...env, EVENTS_SPOOL: "off" }, owner.id, [event]);
    expect(result).toEqual({ accepted: 1, duplicates: 0 });
    // A spooled message would be in R2 now: the consumer waits for its batch before storing and releasing.
    const objects = await Promise.all(
      (await spooled()).map(async (key) => (await (await env.BUNDLES.get(key))?.text()) ?? ""),
    );
    expect(objects.filter((body) => body.includes(event.id))).toEqual([]);
    await until(async () => (await totals(owner.id)).raw?.events === 1);
    expect((await totals(owner.id)).raw?.events).toBe(1);
  });

  it("releases the spool of a poison message it parks in the dead-letter queue", async () => {
    const key = `${SPOOL_PREFIX}${crypto.randomUUID()}`;
    const body = JSON.stringify({ spool: key, events: [{ specversion: "1.0", id: "x", type: "Bad Type" }] });
    await env.BUNDLES.put(key, body);
    const result = await deliver([body]);
    expect(result.explicitAcks).toHaveLength(1);
    expect(await env.BUNDLES.head(key)).toBeNull();
  });
});
