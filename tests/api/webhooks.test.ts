import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../workers/index";
import { database } from "../../workers/shared/db/client";
import { type CloudEvent, cloudEvent } from "../../workers/shared/events/outbox";
import type { DeliveryBody } from "../../workers/shared/webhooks/deliveries";
import {
  MAX_DELIVERY_ATTEMPTS,
  retryDelaySeconds,
  retrySchedule,
} from "../../workers/shared/webhooks/delivery-attempt";
import { fanOutWebhooks } from "../../workers/shared/webhooks/fan-out";
import { submitAsLinkedAccount } from "../../workers/shared/webhooks/github";
import { signatureHeader } from "../../workers/shared/webhooks/signature";
import { checkOutboundUrl } from "../../workers/shared/webhooks/url-policy";
import { MAX_WEBHOOKS_PER_ACCOUNT } from "../../workers/shared/webhooks/webhooks";
import { adminToken, api, bundle, countObjects, countRows, errorOf, publish, signup } from "../helpers";

type Account = Awaited<ReturnType<typeof signup>>;

interface WebhookBody {
  webhook: { id: string; url: string; events: string[]; description: string | null };
  secret: string;
}

interface DeliveryView {
  id: string;
  webhookId: string;
  eventId: string;
  type: string;
  status: string;
  attempts: number;
  lastResponseStatus: number | null;
  lastError: string | null;
}

interface DeliveryDetail {
  delivery: DeliveryView & { body: DeliveryBody };
  attempts: { attempt: number; manual: boolean; ok: boolean; error: string | null; durationMs: number }[];
}

// Nothing listens on the discard port, so attempts fail fast with a refused connection; development allows loopback.
const UNREACHABLE = "http://127.0.0.1:9/hooks/soma";

const unique = () => crypto.randomUUID().replace(/-/g, "");

function createWebhook(token: string, json: unknown): Promise<Response> {
  return api("/v1/webhooks", { method: "POST", token, json });
}

async function webhookFor(account: Account, events: string[], url = UNREACHABLE): Promise<WebhookBody> {
  const res = await createWebhook(account.apiKey, { url, events });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as WebhookBody;
}

/** A queue that keeps what is sent to it, so a test decides when (and with which attempt number) it is consumed. */
function recordingQueue(): { queue: Queue; bodies: unknown[] } {
  const bodies: unknown[] = [];
  const queue = {
    async send(body: unknown) {
      bodies.push(body);
    },
    async sendBatch(messages: Iterable<MessageSendRequest>) {
      for (const message of messages) bodies.push(message.body);
    },
  } as unknown as Queue;
  return { queue, bodies };
}

async function fanOut(events: CloudEvent[]): Promise<unknown[]> {
  const { queue, bodies } = recordingQueue();
  await fanOutWebhooks({ ...env, WEBHOOKS: queue }, events);
  return bodies;
}

/** Runs the real queue handler on a batch; `delays` holds each retry's delaySeconds (the result omits them). */
async function consume(bodies: unknown[], attempts = 1) {
  const batch = createMessageBatch(
    "soma-webhooks",
    bodies.map((body, i) => ({ id: `msg-${unique()}-${i}`, timestamp: new Date(), attempts, body })),
  );
  const delays: (number | undefined)[] = [];
  for (const message of batch.messages) {
    const retry = message.retry.bind(message);
    message.retry = (options) => {
      delays.push(options?.delaySeconds);
      retry(options);
    };
  }
  const ctx = createExecutionContext();
  await worker.queue(batch, env, ctx);
  return { ...(await getQueueResult(batch, ctx)), delays };
}

function published(accountId: string, capsule = "acme/tool"): CloudEvent {
  return cloudEvent("soma.capsule.published", `${capsule}@1.0.0`, { capsule, version: "1.0.0", accountId });
}

async function deliveries(token: string, webhookId: string, query = ""): Promise<DeliveryView[]> {
  const res = await api(`/v1/webhooks/${webhookId}/deliveries${query}`, { token });
  expect(res.status, await res.clone().text()).toBe(200);
  return ((await res.json()) as { deliveries: DeliveryView[] }).deliveries;
}

async function hmacHex(secret: string, message: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(message)));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

describe("POST /v1/webhooks", () => {
  it("registers a webhook and shows its generated secret only in the creation answer", async () => {
    const account = await signup();
    const created = await webhookFor(account, ["capsule.published", "install.created", "capsule.published"]);
    expect(created.secret).toMatch(/^whsec_[a-f0-9]{64}$/);
    expect(created.webhook).toMatchObject({
      id: expect.stringMatching(/^wh_[a-f0-9]{32}$/),
      url: UNREACHABLE,
      events: ["capsule.published", "install.created"],
    });
    const one = await api(`/v1/webhooks/${created.webhook.id}`, { token: account.apiKey });
    const list = await api("/v1/webhooks", { token: account.apiKey });
    expect(one.status).toBe(200);
    expect(list.status).toBe(200);
    const texts = [await one.text(), await list.text()];
    for (const text of texts) expect(text).not.toContain(created.secret);
    expect(JSON.parse(texts[1]!).webhooks.map((w: { id: string }) => w.id)).toEqual([created.webhook.id]);
  });

  it("keeps a secret the caller chose and accepts price.changed before the platform emits it", async () => {
    const account = await signup();
    const res = await createWebhook(account.apiKey, {
      url: "https://hooks.example.com/soma",
      events: ["price.changed"],
      secret: "my-own-secret-0123456789",
      description: "pricing alerts",
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as WebhookBody;
    expect(body.secret).toBe("my-own-secret-0123456789");
    expect(body.webhook.description).toBe("pricing alerts");
  });

  it("refuses unknown events, empty event lists, short secrets and unknown fields, storing nothing", async () => {
    const account = await signup();
    const before = await countRows("webhooks");
    for (const json of [
      { url: "https://hooks.example.com/x", events: ["capsule.exploded"] },
      { url: "https://hooks.example.com/x", events: [] },
      { url: "https://hooks.example.com/x", events: ["capsule.published"], secret: "short" },
      { url: "https://hooks.example.com/x", events: ["capsule.published"], active: true },
      { events: ["capsule.published"] },
    ]) {
      const res = await createWebhook(account.apiKey, json);
      expect(res.status, JSON.stringify(json)).toBe(400);
      expect((await errorOf(res)).code).toBe("VALIDATION_FAILED");
    }
    expect(await countRows("webhooks")).toBe(before);
  });

  it("refuses URLs the policy forbids with the url field named, storing nothing", async () => {
    const account = await signup();
    const before = await countRows("webhooks");
    for (const url of [
      "http://10.0.0.5/hook",
      "https://192.168.1.10/hook",
      "https://user:pass@hooks.example.com/hook",
      "http://hooks.example.com/hook",
      "http://127.0.0.2/hook",
      "ftp://hooks.example.com/hook",
    ]) {
      const res = await createWebhook(account.apiKey, { url, events: ["capsule.published"] });
      expect(res.status, url).toBe(400);
      const error = await errorOf(res);
      expect(error.code).toBe("VALIDATION_FAILED");
      expect((error.details as { issues: { path: string }[] }).issues[0]?.path).toBe("url");
    }
    expect(await countRows("webhooks")).toBe(before);
  });

  it("refuses anonymous callers and the admin token, which has no account", async () => {
    const before = await countRows("webhooks");
    const json = { url: "https://hooks.example.com/x", events: ["capsule.published"] };
    expect((await api("/v1/webhooks", { method: "POST", json })).status).toBe(401);
    expect((await createWebhook(adminToken(), json)).status).toBe(403);
    expect((await api("/v1/webhooks", { token: adminToken() })).status).toBe(403);
    expect(await countRows("webhooks")).toBe(before);
  });

  it(`refuses a webhook beyond ${MAX_WEBHOOKS_PER_ACCOUNT} per account`, async () => {
    const account = await signup();
    for (let i = 0; i < MAX_WEBHOOKS_PER_ACCOUNT; i++) {
      await webhookFor(account, ["install.created"], `https://hooks.example.com/${i}`);
    }
    const res = await createWebhook(account.apiKey, {
      url: "https://hooks.example.com/one-more",
      events: ["install.created"],
    });
    expect(res.status).toBe(409);
    expect((await errorOf(res)).code).toBe("CONFLICT");
    expect(
      (
        await env.DB.prepare("SELECT count(*) AS n FROM webhooks WHERE account_id = ?")
          .bind(account.id)
          .first()
      )?.n,
    ).toBe(MAX_WEBHOOKS_PER_ACCOUNT);
  });
});

describe("PATCH and DELETE /v1/webhooks/:id", () => {
  it("changes the URL and events, keeping the secret", async () => {
    const account = await signup();
    const { webhook, secret } = await webhookFor(account, ["capsule.published"]);
    const res = await api(`/v1/webhooks/${webhook.id}`, {
      method: "PATCH",
      token: account.apiKey,
      json: { url: "https://hooks.example.com/new", events: ["budget.threshold", "project.failed"] },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as WebhookBody).webhook).toMatchObject({
      url: "https://hooks.example.com/new",
      events: ["budget.threshold", "project.failed"],
    });
    const row = await env.DB.prepare("SELECT secret FROM webhooks WHERE id = ?").bind(webhook.id).first();
    expect(row?.secret).toBe(secret);
  });

  it("refuses an empty change and a forbidden URL, changing nothing", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    for (const json of [{}, { url: "https://169.254.169.254/latest" }, { events: ["nope"] }]) {
      const res = await api(`/v1/webhooks/${webhook.id}`, { method: "PATCH", token: account.apiKey, json });
      expect(res.status, JSON.stringify(json)).toBe(400);
    }
    const row = await env.DB.prepare("SELECT url, events FROM webhooks WHERE id = ?")
      .bind(webhook.id)
      .first();
    expect(row).toEqual({ url: UNREACHABLE, events: JSON.stringify(["capsule.published"]) });
  });

  it("deletes a webhook with its delivery log", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const [message] = await fanOut([published(account.id)]);
    await consume([message]);
    const res = await api(`/v1/webhooks/${webhook.id}`, { method: "DELETE", token: account.apiKey });
    expect(res.status).toBe(204);
    for (const table of ["webhooks", "webhook_deliveries", "webhook_attempts"]) {
      const column = table === "webhooks" ? "id" : "webhook_id";
      const row = await env.DB.prepare(`SELECT count(*) AS n FROM ${table} WHERE ${column} = ?`)
        .bind(webhook.id)
        .first();
      expect(row?.n, table).toBe(0);
    }
    expect((await api(`/v1/webhooks/${webhook.id}`, { token: account.apiKey })).status).toBe(404);
  });

  it("answers 404 to another account for every webhook route, changing nothing", async () => {
    const owner = await signup();
    const stranger = await signup();
    const { webhook } = await webhookFor(owner, ["capsule.published"]);
    const [message] = await fanOut([published(owner.id)]);
    const { deliveryId } = message as { deliveryId: string };
    const base = `/v1/webhooks/${webhook.id}`;
    const attempts: [string, string, unknown?][] = [
      ["GET", base],
      ["PATCH", base, { events: ["install.created"] }],
      ["DELETE", base],
      ["POST", `${base}/ping`],
      ["GET", `${base}/deliveries`],
      ["GET", `${base}/deliveries/${deliveryId}`],
      ["POST", `${base}/deliveries/${deliveryId}/redeliver`],
    ];
    for (const [method, path, json] of attempts) {
      const res = await api(path, { method, token: stranger.apiKey, ...(json ? { json } : {}) });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect((await api(path, { method, ...(json ? { json } : {}) })).status, `anonymous ${method}`).toBe(
        401,
      );
    }
    const row = await env.DB.prepare(
      "SELECT events, (SELECT generation FROM webhook_deliveries WHERE id = ?) AS g FROM webhooks WHERE id = ?",
    )
      .bind(deliveryId, webhook.id)
      .first();
    expect(row).toEqual({ events: JSON.stringify(["capsule.published"]), g: 1 });
  });
});

describe("URL policy", () => {
  const production = { ENVIRONMENT: "production" };
  const development = { ENVIRONMENT: "development" };

  it("allows only https to public hosts in production", () => {
    expect(checkOutboundUrl("https://hooks.example.com/soma?x=1", production).ok).toBe(true);
    expect(checkOutboundUrl("https://93.184.216.34:8443/hook", production).ok).toBe(true);
    expect(checkOutboundUrl("https://[2606:4700::1111]/hook", production).ok).toBe(true);
    for (const url of [
      "http://hooks.example.com/soma",
      "https://127.0.0.1/hook",
      "http://127.0.0.1:8080/hook",
      "https://localhost/hook",
      "https://[::1]/hook",
      "https://10.1.2.3/",
      "https://172.20.0.1/",
      "https://192.168.0.1/",
      "https://169.254.169.254/latest/meta-data",
      "https://100.64.0.1/",
      "https://0.0.0.0/",
      "https://0x7f.1/",
      "https://2130706433/",
      "https://[fd00::1]/",
      "https://[fe80::1]/",
      "https://[::ffff:10.0.0.1]/",
      "https://[::ffff:127.0.0.1]/",
      "https://metadata.internal/",
      "https://printer.local/",
      "https://intranet/",
      "https://user:secret@hooks.example.com/",
      "https://hooks.example.com/#frag",
      "javascript:alert(1)",
      "not a url",
    ]) {
      expect(checkOutboundUrl(url, production).ok, url).toBe(false);
    }
  });

  it("also allows exactly 127.0.0.1, localhost and [::1] in development, over http or https", () => {
    for (const url of [
      "http://127.0.0.1:9999/hook",
      "http://localhost:3000/hook",
      "http://[::1]:4000/hook",
      "https://localhost/hook",
    ]) {
      expect(checkOutboundUrl(url, development).ok, url).toBe(true);
    }
    for (const url of [
      "http://127.0.0.2/hook",
      "http://10.0.0.1/hook",
      "http://hooks.example.com/hook",
      "http://user:pw@127.0.0.1/hook",
    ]) {
      expect(checkOutboundUrl(url, development).ok, url).toBe(false);
    }
  });
});

describe("signatures and retries", () => {
  it("signs t=<unix seconds>,v1=<hex HMAC-SHA256(secret, '<t>.<body>')>", async () => {
    const body = JSON.stringify({
      id: "evt_1",
      type: "capsule.published",
      time: "2026-01-01T00:00:00Z",
      data: {},
    });
    const header = await signatureHeader("whsec_test", body, 1_767_225_600);
    expect(header).toBe(`t=1767225600,v1=${await hmacHex("whsec_test", `1767225600.${body}`)}`);
    expect(header).toMatch(/^t=\d+,v1=[a-f0-9]{64}$/);
  });

  it("backs off from 30 s, doubling to a 4 h cap, over 15 attempts spanning at least 24 h", () => {
    const schedule = retrySchedule(30);
    expect(schedule).toEqual([
      30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 14400, 14400, 14400, 14400, 14400,
    ]);
    expect(schedule.length).toBe(MAX_DELIVERY_ATTEMPTS - 1);
    expect(schedule.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(24 * 3600);
    expect(Math.max(...retrySchedule(120))).toBeLessThanOrEqual(43_200);
    expect(retryDelaySeconds(2, 1)).toBe(2);
  });
});

describe("fanOutWebhooks", () => {
  it("queues one delivery per subscribed webhook of the account concerned, with the {id,type,time,data} body", async () => {
    const author = await signup();
    const other = await signup();
    const subscribed = await webhookFor(author, ["capsule.published"]);
    await webhookFor(author, ["install.created"]);
    await webhookFor(other, ["capsule.published"]);
    const event = published(author.id);
    const bodies = await fanOut([event]);
    expect(bodies).toEqual([
      { deliveryId: expect.stringMatching(/^whd_[a-f0-9]{32}$/), generation: 1, manual: false },
    ]);
    const [delivery] = await deliveries(author.apiKey, subscribed.webhook.id);
    expect(delivery).toMatchObject({
      eventId: event.id,
      type: "capsule.published",
      status: "pending",
      attempts: 0,
    });
    const detail = (await (
      await api(`/v1/webhooks/${subscribed.webhook.id}/deliveries/${delivery!.id}`, { token: author.apiKey })
    ).json()) as DeliveryDetail;
    expect(detail.delivery.body).toEqual({
      id: event.id,
      type: "capsule.published",
      time: event.time,
      data: event.data,
    });
  });

  it("queues nothing new when the same events are handled again", async () => {
    const account = await signup();
    await webhookFor(account, ["install.created", "budget.threshold"]);
    await webhookFor(account, ["budget.threshold"]);
    const events = [
      cloudEvent("soma.install.created", "acme/tool@1.0.0", { accountId: account.id, installId: "ins_1" }),
      cloudEvent("soma.budget.threshold", `account/${account.id}`, { accountId: account.id, level: "soft" }),
    ];
    const first = await fanOut(events);
    const again = await fanOut(events);
    expect(first).toHaveLength(3);
    expect(again).toEqual([]);
    const rows = await env.DB.prepare(
      "SELECT count(*) AS n FROM webhook_deliveries WHERE webhook_id IN (SELECT id FROM webhooks WHERE account_id = ?)",
    )
      .bind(account.id)
      .first();
    expect(rows?.n).toBe(3);
  });

  it("sends capsule events that name no account to the capsule's owner", async () => {
    const author = await signup();
    const { webhook } = await webhookFor(author, ["capsule.deprecated"]);
    const name = `${author.handle}/old-tool`;
    await publish(author.apiKey, { name });
    const event = cloudEvent("soma.capsule.deprecated", `${name}@1.0.0`, {
      capsule: name,
      version: "1.0.0",
      message: "use new-tool",
    });
    expect(await fanOut([event])).toHaveLength(1);
    expect((await deliveries(author.apiKey, webhook.id)).map((d) => d.eventId)).toEqual([event.id]);
  });

  it("ignores unsubscribed and non-webhook event types, and events of unknown accounts", async () => {
    const account = await signup();
    await webhookFor(account, ["project.completed"]);
    const bodies = await fanOut([
      cloudEvent("soma.project.failed", "project/p1", { accountId: account.id }),
      cloudEvent("soma.usage.tokens", "test", { accountId: account.id, inputTokens: 1 }),
      cloudEvent("soma.project.completed", "project/p2", { accountId: "acc_nobody" }),
      cloudEvent("soma.capsule.deprecated", "nobody/thing@1.0.0", { capsule: "nobody/thing" }),
    ]);
    expect(bodies).toEqual([]);
  });

  it("delivers soma.price.changed to subscribers once the platform emits it", async () => {
    const account = await signup();
    await webhookFor(account, ["price.changed"]);
    const bodies = await fanOut([
      cloudEvent("soma.price.changed", "acme/tool", { accountId: account.id, amountUsd: 2 }),
    ]);
    expect(bodies).toHaveLength(1);
  });
});

describe("webhook delivery consumer", () => {
  it("records a failed attempt and retries 30 s later", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const [message] = await fanOut([published(account.id)]);
    const result = await consume([message]);
    expect(result.retryMessages).toHaveLength(1);
    expect(result.delays).toEqual([30]);
    const [delivery] = await deliveries(account.apiKey, webhook.id);
    expect(delivery).toMatchObject({ status: "pending", attempts: 1, lastResponseStatus: null });
    expect(delivery?.lastError).toBeTruthy();
    const detail = (await (
      await api(`/v1/webhooks/${webhook.id}/deliveries/${delivery!.id}`, { token: account.apiKey })
    ).json()) as DeliveryDetail;
    expect(detail.attempts).toEqual([
      {
        attempt: 1,
        manual: false,
        ok: false,
        responseStatus: null,
        error: expect.any(String),
        durationMs: expect.any(Number),
        at: expect.any(String),
      },
    ]);
  });

  it("waits the scheduled delay for later attempts and marks the delivery failed after the last", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const [message] = await fanOut([published(account.id)]);
    const tenth = await consume([message], 10);
    expect(tenth.delays).toEqual([14_400]);
    const last = await consume([message], MAX_DELIVERY_ATTEMPTS);
    expect(last.retryMessages).toEqual([]);
    expect(last.explicitAcks).toHaveLength(1);
    const [delivery] = await deliveries(account.apiKey, webhook.id, "?status=failed");
    expect(delivery).toMatchObject({ status: "failed", attempts: 2 });
    expect(await deliveries(account.apiKey, webhook.id, "?status=pending")).toEqual([]);
  });

  it("drops messages of a delivery that is gone, finished or redelivered since, and dead-letters garbage", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const [message] = (await fanOut([published(account.id)])) as { deliveryId: string; generation: number }[];
    const stale = { ...message, generation: 0 + 2 };
    const gone = { deliveryId: `whd_${"0".repeat(32)}`, generation: 1, manual: false };
    const result = await consume([stale, gone, { nonsense: true }]);
    expect(result.retryMessages).toEqual([]);
    expect(result.explicitAcks).toHaveLength(3);
    const [delivery] = await deliveries(account.apiKey, webhook.id);
    expect(delivery?.attempts).toBe(0);
  });
});

describe("delivery log and redelivery", () => {
  it("pages deliveries newest first and refuses a forged cursor", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["install.created"]);
    const events = [1, 2, 3].map((n) =>
      cloudEvent("soma.install.created", `acme/tool@${n}.0.0`, { accountId: account.id, n }),
    );
    for (const event of events) {
      await fanOut([event]);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const first = await api(`/v1/webhooks/${webhook.id}/deliveries?limit=2`, { token: account.apiKey });
    const page1 = (await first.json()) as { deliveries: DeliveryView[]; nextCursor: string };
    expect(page1.deliveries.map((d) => d.eventId)).toEqual([events[2]!.id, events[1]!.id]);
    const second = await api(
      `/v1/webhooks/${webhook.id}/deliveries?limit=2&cursor=${encodeURIComponent(page1.nextCursor)}`,
      { token: account.apiKey },
    );
    const page2 = (await second.json()) as { deliveries: DeliveryView[]; nextCursor: string | null };
    expect(page2.deliveries.map((d) => d.eventId)).toEqual([events[0]!.id]);
    expect(page2.nextCursor).toBeNull();
    for (const query of ["?cursor=bm9wZQ", "?limit=0", "?status=lost", "?extra=1"]) {
      const res = await api(`/v1/webhooks/${webhook.id}/deliveries${query}`, { token: account.apiKey });
      expect(res.status, query).toBe(400);
    }
  });

  it("redelivers a failed delivery in a new round that old messages cannot retry", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const [message] = (await fanOut([published(account.id)])) as { deliveryId: string; generation: number }[];
    await consume([message], MAX_DELIVERY_ATTEMPTS);
    const res = await api(`/v1/webhooks/${webhook.id}/deliveries/${message!.deliveryId}/redeliver`, {
      method: "POST",
      token: account.apiKey,
    });
    expect(res.status).toBe(202);
    const { delivery } = (await res.json()) as { delivery: DeliveryView };
    expect(delivery).toMatchObject({ id: message!.deliveryId, status: "pending", attempts: 1 });
    const old = await consume([message], 2);
    expect(old.retryMessages).toEqual([]);
    const row = await env.DB.prepare("SELECT generation FROM webhook_deliveries WHERE id = ?")
      .bind(message!.deliveryId)
      .first();
    expect(row?.generation).toBe(2);
    const manual = await consume([{ ...message, generation: 2, manual: true }]);
    expect(manual.delays).toEqual([30]);
  });

  it("refuses a malformed delivery id and an unknown one", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const base = `/v1/webhooks/${webhook.id}/deliveries`;
    const bad = await api(`${base}/not-an-id/redeliver`, { method: "POST", token: account.apiKey });
    expect(bad.status).toBe(400);
    const unknown = await api(`${base}/whd_${"a".repeat(32)}/redeliver`, {
      method: "POST",
      token: account.apiKey,
    });
    expect(unknown.status).toBe(404);
    expect((await api(`/v1/webhooks/not-an-id/deliveries`, { token: account.apiKey })).status).toBe(400);
  });

  it("queues a webhook.ping delivery on request", async () => {
    const account = await signup();
    const { webhook } = await webhookFor(account, ["capsule.published"]);
    const res = await api(`/v1/webhooks/${webhook.id}/ping`, { method: "POST", token: account.apiKey });
    expect(res.status).toBe(202);
    const { delivery } = (await res.json()) as { delivery: DeliveryView };
    expect(delivery).toMatchObject({ webhookId: webhook.id, type: "webhook.ping" });
    const row = await env.DB.prepare("SELECT body, queued_at FROM webhook_deliveries WHERE id = ?")
      .bind(delivery.id)
      .first<{ body: string; queued_at: string | null }>();
    expect(JSON.parse(row!.body)).toMatchObject({ type: "webhook.ping", data: { webhookId: webhook.id } });
    expect(row?.queued_at).toBeTruthy();
  });
});

interface LinkBody {
  link: { id: string; repository: string };
  secret: string;
}

async function linkRepository(account: Account, repository: string, secret?: string): Promise<LinkBody> {
  const res = await api("/v1/integrations/github", {
    method: "POST",
    token: account.apiKey,
    json: { repository, ...(secret ? { secret } : {}) },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as LinkBody;
}

function releasePayload(repository: string, assets: { name: string; url: string }[], action = "published") {
  return {
    action,
    release: {
      tag_name: "v1.0.0",
      draft: false,
      assets: assets.map((a) => ({ name: a.name, browser_download_url: a.url, state: "uploaded" })),
    },
    repository: { full_name: repository },
  };
}

async function githubHook(
  secret: string,
  payload: unknown,
  options: { event?: string; signature?: string; form?: boolean } = {},
): Promise<Response> {
  const json = JSON.stringify(payload);
  const body = options.form ? `payload=${encodeURIComponent(json)}` : json;
  return api("/v1/hooks/github", {
    method: "POST",
    body,
    headers: {
      "content-type": options.form ? "application/x-www-form-urlencoded" : "application/json",
      "x-github-event": options.event ?? "release",
      "x-github-delivery": crypto.randomUUID(),
      "x-hub-signature-256": options.signature ?? `sha256=${await hmacHex(secret, body)}`,
    },
  });
}

async function stateCounts() {
  return {
    submissions: await countRows("submissions"),
    objects: await countObjects(),
    links: await countRows("github_links"),
  };
}

describe("POST /v1/integrations/github", () => {
  it("links a repository to the caller's account and shows the secret once", async () => {
    const account = await signup();
    const repository = `Acme-${unique().slice(0, 8)}/Capsules`;
    const { link, secret } = await linkRepository(account, repository);
    expect(secret).toMatch(/^ghsec_[a-f0-9]{64}$/);
    expect(link.repository).toBe(repository.toLowerCase());
    const list = await api("/v1/integrations/github", { token: account.apiKey });
    const text = await list.text();
    expect(text).not.toContain(secret);
    expect(JSON.parse(text).links).toEqual([
      { id: link.id, repository: link.repository, createdAt: expect.any(String) },
    ]);
  });

  it("refuses a repository linked already, a malformed name, and callers without an account", async () => {
    const first = await signup();
    const second = await signup();
    const repository = `acme-${unique().slice(0, 8)}/capsules`;
    await linkRepository(first, repository);
    const before = await countRows("github_links");
    const taken = await api("/v1/integrations/github", {
      method: "POST",
      token: second.apiKey,
      json: { repository: repository.toUpperCase() },
    });
    expect(taken.status).toBe(409);
    for (const json of [{ repository: "no-slash" }, { repository: "a/b/c" }, { repository: "ok/ok", x: 1 }]) {
      const res = await api("/v1/integrations/github", { method: "POST", token: second.apiKey, json });
      expect(res.status, JSON.stringify(json)).toBe(400);
    }
    const json = { repository: "acme/other" };
    expect((await api("/v1/integrations/github", { method: "POST", json })).status).toBe(401);
    expect((await api("/v1/integrations/github", { method: "POST", token: adminToken(), json })).status).toBe(
      403,
    );
    expect(await countRows("github_links")).toBe(before);
  });

  it("unlinks only the caller's own links", async () => {
    const owner = await signup();
    const stranger = await signup();
    const { link } = await linkRepository(owner, `acme-${unique().slice(0, 8)}/capsules`);
    const path = `/v1/integrations/github/${link.id}`;
    expect((await api(path, { method: "DELETE", token: stranger.apiKey })).status).toBe(404);
    expect((await api(path, { method: "DELETE" })).status).toBe(401);
    expect((await api(path, { method: "DELETE", token: owner.apiKey })).status).toBe(204);
    expect((await api(path, { method: "DELETE", token: owner.apiKey })).status).toBe(404);
  });
});

describe("POST /v1/hooks/github", () => {
  it("answers 401 to a bad, missing or foreign signature and stores nothing", async () => {
    const account = await signup();
    const repository = `acme-${unique().slice(0, 8)}/capsules`;
    const { secret } = await linkRepository(account, repository);
    const payload = releasePayload(repository, [{ name: "c.tar.gz", url: "http://10.9.9.9/c.tar.gz" }]);
    const before = await stateCounts();
    const wrong = await githubHook("not-the-secret", payload);
    const missing = await githubHook(secret, payload, { signature: "" });
    const sha1 = await githubHook(secret, payload, {
      signature: "sha1=0123456789abcdef0123456789abcdef01234567",
    });
    const unknownRepo = await githubHook(secret, releasePayload("nobody/nothing", []));
    for (const res of [wrong, missing, sha1, unknownRepo]) {
      expect(res.status).toBe(401);
      expect((await errorOf(res)).code).toBe("UNAUTHENTICATED");
    }
    expect(await stateCounts()).toEqual(before);
  });

  it("acknowledges other events and non-publishing release actions without acting", async () => {
    const account = await signup();
    const repository = `acme-${unique().slice(0, 8)}/capsules`;
    const { secret } = await linkRepository(account, repository);
    const asset = [{ name: "c.tar.gz", url: "http://10.9.9.9/c.tar.gz" }];
    const before = await stateCounts();
    const push = await githubHook(
      secret,
      { ref: "refs/heads/main", repository: { full_name: repository } },
      {
        event: "push",
      },
    );
    const ping = await githubHook(
      secret,
      { zen: "Keep it simple", repository: { full_name: repository } },
      {
        event: "ping",
      },
    );
    const edited = await githubHook(secret, releasePayload(repository, asset, "edited"));
    const noBundle = await githubHook(secret, releasePayload(repository, [{ name: "notes.txt", url: "x" }]));
    for (const res of [push, ping, edited, noBundle]) {
      expect(res.status).toBe(202);
      expect(await res.json()).toMatchObject({ ignored: true });
    }
    expect(await stateCounts()).toEqual(before);
  });

  it("refuses a release asset URL the policy forbids and one that cannot be fetched, submitting nothing", async () => {
    const account = await signup();
    const repository = `acme-${unique().slice(0, 8)}/capsules`;
    const { secret } = await linkRepository(account, repository);
    const before = await stateCounts();
    const privateUrl = await githubHook(
      secret,
      releasePayload(repository, [{ name: "c.tar.gz", url: "http://10.9.9.9/c.tar.gz" }]),
    );
    expect(privateUrl.status).toBe(400);
    const unreachable = await githubHook(
      secret,
      releasePayload(repository, [{ name: "c.tgz", url: "http://127.0.0.1:9/c.tgz" }]),
      { form: true },
    );
    expect(unreachable.status).toBe(502);
    expect((await errorOf(unreachable)).code).toBe("UPSTREAM_FAILED");
    expect(await stateCounts()).toEqual(before);
  });

  it("submits fetched release bytes as the linked account, within its namespace only", async () => {
    const account = await signup();
    const repository = `acme-${unique().slice(0, 8)}/capsules`;
    const { link } = await linkRepository(account, repository);
    const row = await env.DB.prepare("SELECT account_id FROM github_links WHERE id = ?")
      .bind(link.id)
      .first<{ account_id: string }>();
    const db = database(env.DB);
    const submission = await submitAsLinkedAccount(
      env,
      db,
      { accountId: row!.account_id, repository },
      await bundle({ name: `${account.handle}/from-github`, version: "1.2.0" }),
    );
    expect(submission).toMatchObject({
      name: `${account.handle}/from-github`,
      status: "published",
      submitter: account.handle,
    });
    await expect(
      submitAsLinkedAccount(
        env,
        db,
        { accountId: row!.account_id, repository },
        await bundle({ name: "someone-else/tool" }),
      ),
    ).rejects.toMatchObject({ code: "FORBIDDEN" });
  });
});
