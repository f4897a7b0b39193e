import { spawn } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { stringify } from "yaml";
import { verifyWebhookSignature } from "../../cli/commands/webhook-verify.ts";
import { buildTarGz } from "../../cli/lib/bundle.ts";

// A real receiver on 127.0.0.1 against the platform as `npm start` runs it, with webhook retries 1 s, 2 s, ...
// apart (SOMA_WEBHOOK_RETRY_BASE_SECONDS=1 from global-setup.ts).

const root = resolve(import.meta.dirname, "../..");
const baseUrl = (inject("baseUrl") || process.env.SOMA_E2E_URL || "").replace(/\/+$/, "");

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Unix seconds when it arrived: what a receiver compares the signature's t with. */
  at: number;
  atMs: number;
  answered: number;
}

type Handler = (request: Received, response: ServerResponse) => void;

interface Receiver {
  url: string;
  received: Received[];
  handle: (handler: Handler) => void;
  close: () => Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  let handler: Handler = (_request, response) => response.writeHead(200).end("ok");
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const now = Date.now();
      const entry: Received = {
        path: request.url ?? "",
        headers: request.headers,
        body: Buffer.concat(chunks),
        at: Math.floor(now / 1000),
        atMs: now,
        answered: 0,
      };
      received.push(entry);
      const writeHead = response.writeHead.bind(response);
      response.writeHead = ((status: number, ...rest: never[]) => {
        entry.answered = status;
        return writeHead(status, ...rest);
      }) as typeof response.writeHead;
      handler(entry, response);
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    handle: (next) => {
      handler = next;
    },
    close: () => new Promise((done) => server.close(() => done())),
  };
}

async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 100));
  }
}

async function call(path: string, init: { method?: string; token?: string; json?: unknown } = {}) {
  const headers: Record<string, string> = {};
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.json !== undefined) headers["content-type"] = "application/json";
  return fetch(`${baseUrl}${path}`, {
    method: init.method ?? "GET",
    headers,
    ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
  });
}

async function signup(): Promise<{ handle: string; apiKey: string }> {
  const handle = `hooks${Date.now().toString(36)}${Math.floor(Math.random() * 1000)}`;
  const res = await fetch(`${baseUrl}/v1/accounts`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "cf-connecting-ip": `198.51.100.${1 + Math.floor(Math.random() * 250)}`,
    },
    body: JSON.stringify({ handle, email: `${handle}@example.com` }),
  });
  expect(res.status).toBe(201);
  return { handle, apiKey: ((await res.json()) as { apiKey: string }).apiKey };
}

async function capsuleBundle(name: string, version: string): Promise<Uint8Array> {
  const manifest = {
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: { name, version, category: "Testing", tags: ["webhooks"], license: "MIT" },
    spec: {
      description: "Released from a GitHub repository",
      runtime: "worker",
      entrypoint: "main.js",
      permissions: [],
    },
  };
  return buildTarGz([
    { path: "capsule.yaml", mode: 0o644, data: Buffer.from(stringify(manifest)) },
    { path: "main.js", mode: 0o644, data: Buffer.from("export default { run: (i) => i };\n") },
  ]);
}

/** Runs the real CLI as a user would (`npx soma ...`; npx supplies Node 22). */
function soma(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, failed) => {
    const child = spawn("npx", ["--no-install", "soma", ...args], {
      cwd: root,
      env: { ...process.env, SOMA_CONFIG: join(scratch, "none.json") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.once("error", failed);
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

let receiver: Receiver;
let scratch: string;

beforeAll(async () => {
  receiver = await startReceiver();
  scratch = await mkdtemp(join(tmpdir(), "soma-webhooks-e2e-"));
});

afterAll(async () => {
  await receiver?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe("outgoing webhooks to a real receiver", () => {
  let account: { handle: string; apiKey: string };
  let webhookId: string;
  let secret: string;
  let deliveries: Received[];

  it("retries a failing receiver with backoff until it accepts, which happens exactly once", async () => {
    account = await signup();
    const created = await call("/v1/webhooks", {
      method: "POST",
      token: account.apiKey,
      json: { url: `${receiver.url}/flaky`, events: ["capsule.published"] },
    });
    expect(created.status).toBe(201);
    ({
      webhook: { id: webhookId },
      secret,
    } = (await created.json()) as { webhook: { id: string }; secret: string });

    let calls = 0;
    receiver.handle((_request, response) => {
      calls += 1;
      response.writeHead(calls <= 2 ? 500 : 204).end();
    });
    const ping = await call(`/v1/webhooks/${webhookId}/ping`, { method: "POST", token: account.apiKey });
    expect(ping.status).toBe(202);
    const { delivery } = (await ping.json()) as { delivery: { id: string } };

    const mine = () => receiver.received.filter((r) => r.headers["soma-delivery"] === delivery.id);
    await until("an accepted delivery", () => (mine().some((r) => r.answered === 204) ? true : undefined));
    // Long enough for a spurious extra attempt (the next retry would be 4 s after the third) to show up.
    await new Promise((done) => setTimeout(done, 5_000));
    deliveries = mine();
    expect(deliveries.map((r) => r.answered)).toEqual([500, 500, 204]);
    expect(deliveries[1]!.atMs - deliveries[0]!.atMs).toBeGreaterThanOrEqual(900);
    expect(deliveries[2]!.atMs - deliveries[1]!.atMs).toBeGreaterThanOrEqual(1_900);

    for (const request of deliveries) {
      expect(request.path).toBe("/flaky");
      expect(request.headers["content-type"]).toBe("application/json");
      expect(request.headers["soma-event"]).toBe("webhook.ping");
      const header = String(request.headers["soma-signature"]);
      expect(header).toMatch(/^t=\d+,v1=[a-f0-9]{64}$/);
      expect(verifyWebhookSignature({ secret, header, body: request.body, now: request.at })).toMatchObject({
        valid: true,
      });
    }
    const body = JSON.parse(deliveries[2]!.body.toString("utf8")) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["data", "id", "time", "type"]);
    expect(body).toMatchObject({ type: "webhook.ping", data: { webhookId } });
    expect(new Set(deliveries.map((r) => r.body.toString("utf8"))).size).toBe(1);

    const log = await call(`/v1/webhooks/${webhookId}/deliveries/${delivery.id}`, { token: account.apiKey });
    const detail = (await log.json()) as {
      delivery: { status: string; attempts: number; lastResponseStatus: number };
      attempts: { responseStatus: number; ok: boolean; durationMs: number }[];
    };
    expect(detail.delivery).toMatchObject({ status: "delivered", attempts: 3, lastResponseStatus: 204 });
    expect(detail.attempts.map((a) => [a.responseStatus, a.ok])).toEqual([
      [500, false],
      [500, false],
      [204, true],
    ]);
  });

  it("lets the CLI accept the delivery and refuse a tampered body, a forged signature and a replay", async () => {
    const accepted = deliveries[2]!;
    const header = String(accepted.headers["soma-signature"]);
    const bodyFile = join(scratch, "body.json");
    await writeFile(bodyFile, accepted.body);
    const ok = await soma([
      "webhook-verify",
      "--secret",
      secret,
      "--signature",
      header,
      "--body-file",
      bodyFile,
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("Valid signature");

    const tamperedFile = join(scratch, "tampered.json");
    await writeFile(tamperedFile, accepted.body.toString("utf8").replace("webhook.ping", "webhook.pong"));
    const tampered = await soma([
      "webhook-verify",
      "--secret",
      secret,
      "--signature",
      header,
      "--body-file",
      tamperedFile,
      "--json",
    ]);
    expect(tampered.code).toBe(1);
    expect(JSON.parse(tampered.stdout).error.code).toBe("SIGNATURE_INVALID");

    const t = Number(header.match(/t=(\d+)/)?.[1]);
    const mac = header.slice(header.indexOf("v1=") + 3);
    const forged = `t=${t},v1=${mac.slice(0, -1)}${mac.endsWith("0") ? "1" : "0"}`;
    const base = { secret, body: accepted.body };
    expect(verifyWebhookSignature({ ...base, header: forged, now: t }).valid).toBe(false);
    expect(verifyWebhookSignature({ ...base, header, now: t + 299 }).valid).toBe(true);
    expect(verifyWebhookSignature({ ...base, header, now: t + 301 })).toMatchObject({ valid: false });
    // A replay cannot refresh the timestamp either: t is inside the MAC.
    const refreshed = header.replace(`t=${t}`, `t=${t + 400}`);
    expect(verifyWebhookSignature({ ...base, header: refreshed, now: t + 400 }).valid).toBe(false);
    const wrongSecret = verifyWebhookSignature({ ...base, secret: "whsec_other", header, now: t });
    expect(wrongSecret.valid).toBe(false);
    // Independent of the helper: the documented construction.
    const expected = createHmac("sha256", secret).update(`${t}.`).update(accepted.body).digest("hex");
    expect(mac).toBe(expected);
  });

  it("redelivers on request: the receiver gets the same event again, marked in the log as manual", async () => {
    const deliveryId = String(deliveries[0]!.headers["soma-delivery"]);
    const before = receiver.received.length;
    receiver.handle((_request, response) => response.writeHead(200).end());
    const res = await call(`/v1/webhooks/${webhookId}/deliveries/${deliveryId}/redeliver`, {
      method: "POST",
      token: account.apiKey,
    });
    expect(res.status).toBe(202);
    const again = await until("the redelivery", () => receiver.received.slice(before)[0]);
    expect(JSON.parse(again.body.toString("utf8")).id).toBe(
      JSON.parse(deliveries[0]!.body.toString("utf8")).id,
    );
    expect(
      verifyWebhookSignature({ secret, header: String(again.headers["soma-signature"]), body: again.body })
        .valid,
    ).toBe(true);
    const attempts = await until("the manual attempt in the log", async () => {
      const log = await call(`/v1/webhooks/${webhookId}/deliveries/${deliveryId}`, { token: account.apiKey });
      const body = (await log.json()) as { attempts: { manual: boolean; responseStatus: number }[] };
      return body.attempts.length === 4 ? body.attempts : undefined;
    });
    expect(attempts.at(-1)).toMatchObject({ manual: true, responseStatus: 200 });
  });
});

describe("a GitHub release submits its capsule bundle", () => {
  it("answers 401 to a bad signature and submits nothing, then submits the asset of a signed release", async () => {
    const account = await signup();
    const repository = `${account.handle}/capsules`;
    const linked = await call("/v1/integrations/github", {
      method: "POST",
      token: account.apiKey,
      json: { repository },
    });
    expect(linked.status).toBe(201);
    const { secret } = (await linked.json()) as { secret: string };

    const name = `${account.handle}/released`;
    const bytes = await capsuleBundle(name, "1.4.0");
    // Like github.com: the download URL redirects to the asset store.
    receiver.handle((request, response) => {
      if (request.path === "/download/v1.4.0/released.tar.gz") {
        response.writeHead(302, { location: "/assets/released.tar.gz" }).end();
      } else if (request.path === "/assets/released.tar.gz") {
        response.writeHead(200, { "content-type": "application/octet-stream" }).end(Buffer.from(bytes));
      } else {
        response.writeHead(404).end();
      }
    });
    const payload = JSON.stringify({
      action: "published",
      release: {
        tag_name: "v1.4.0",
        draft: false,
        assets: [
          { name: "README.md", browser_download_url: `${receiver.url}/download/v1.4.0/README.md` },
          {
            name: "released.tar.gz",
            state: "uploaded",
            browser_download_url: `${receiver.url}/download/v1.4.0/released.tar.gz`,
          },
        ],
      },
      repository: { full_name: repository },
    });
    const send = (signature: string) =>
      fetch(`${baseUrl}/v1/hooks/github`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-github-event": "release",
          "x-github-delivery": crypto.randomUUID(),
          "x-hub-signature-256": signature,
        },
        body: payload,
      });
    const good = `sha256=${createHmac("sha256", secret).update(payload).digest("hex")}`;
    const bad = `sha256=${createHmac("sha256", "not-the-secret").update(payload).digest("hex")}`;

    const before = receiver.received.length;
    const refused = await send(bad);
    expect(refused.status).toBe(401);
    expect(receiver.received.length).toBe(before);
    expect((await call(`/v1/capsules/${name}`)).status).toBe(404);

    const accepted = await send(good);
    expect(accepted.status, await accepted.clone().text()).toBe(201);
    const result = (await accepted.json()) as {
      results: { asset: string; submission: { name: string; version: string; status: string } }[];
    };
    expect(result.results).toEqual([
      {
        asset: "released.tar.gz",
        submission: expect.objectContaining({ name, version: "1.4.0", status: "published" }),
      },
    ]);
    const served = await fetch(`${baseUrl}/v1/capsules/${name}/versions/1.4.0/bundle`);
    expect(served.status).toBe(200);
    const digest = createHash("sha256")
      .update(Buffer.from(await served.arrayBuffer()))
      .digest("hex");
    expect(digest).toBe(createHash("sha256").update(bytes).digest("hex"));

    // GitHub redelivers on timeouts: the same release again changes nothing.
    const redelivered = await send(good);
    expect(redelivered.status).toBe(409);
  });
});

describe("domain events reach subscribers (needs fanOutWebhooks in the events consumer)", () => {
  it("delivers capsule.published for a capsule the account publishes", async () => {
    const account = await signup();
    const created = await call("/v1/webhooks", {
      method: "POST",
      token: account.apiKey,
      json: { url: `${receiver.url}/events`, events: ["capsule.published"] },
    });
    const { secret } = (await created.json()) as { secret: string };
    receiver.handle((_request, response) => response.writeHead(200).end());
    const name = `${account.handle}/announced`;
    const upload = await fetch(`${baseUrl}/v1/capsules`, {
      method: "POST",
      headers: { authorization: `Bearer ${account.apiKey}`, "content-type": "application/gzip" },
      body: Buffer.from(await capsuleBundle(name, "1.0.0")),
    });
    expect(upload.status).toBe(201);
    const received = await until("the capsule.published delivery", () =>
      receiver.received.find(
        (r) => r.path === "/events" && JSON.parse(r.body.toString("utf8")).data?.capsule === name,
      ),
    );
    const body = JSON.parse(received.body.toString("utf8"));
    expect(body).toMatchObject({ type: "capsule.published", data: { capsule: name, version: "1.0.0" } });
    const header = String(received.headers["soma-signature"]);
    expect(verifyWebhookSignature({ secret, header, body: received.body, now: received.at }).valid).toBe(
      true,
    );
  });
});
