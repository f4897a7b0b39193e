import { packBundle } from "./catalog.mjs";
import { pool } from "./stats.mjs";

const RETRIES = 3;
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** A distinct client address per sign-up: the sign-up limit is 10 a minute per address. */
const clientAddress = (i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/**
 * Creates accounts through `POST /v1/accounts`.
 * @returns {Promise<Map<string, string>>} handle -> API key
 */
export async function signUp(baseUrl, handles, concurrency) {
  const keys = new Map();
  await pool(handles, concurrency, async (handle, i) => {
    const response = await fetch(`${baseUrl}/v1/accounts`, {
      method: "POST",
      headers: { "content-type": "application/json", "cf-connecting-ip": clientAddress(i + 1) },
      body: JSON.stringify({ handle, email: `${handle}@bench.example` }),
    });
    const body = await response.json();
    if (response.status !== 201)
      throw new Error(`sign-up of ${handle}: ${response.status} ${JSON.stringify(body)}`);
    keys.set(handle, body.apiKey);
  });
  return keys;
}

/**
 * Publishes capsules through `POST /v1/capsules`, `concurrency` in flight, retrying transient failures
 * (5xx, 429) a few times. Stops starting new uploads after `deadline`.
 * @returns {Promise<{ published: number, failed: { name: string, reason: string }[], attempted: number, seconds: number }>}
 */
export async function publishAll(baseUrl, capsules, keys, { concurrency, deadline, onProgress }) {
  let published = 0;
  const failed = [];
  const started = performance.now();
  const attempted = await pool(
    capsules,
    concurrency,
    async (capsule) => {
      const bytes = await packBundle(capsule);
      const apiKey = keys.get(capsule.name.slice(0, capsule.name.indexOf("/")));
      const reasons = [];
      for (let attempt = 0; attempt < RETRIES; attempt++) {
        const response = await fetch(`${baseUrl}/v1/capsules`, {
          method: "POST",
          headers: { "content-type": "application/gzip", authorization: `Bearer ${apiKey}` },
          body: bytes,
        });
        const text = await response.text();
        if (response.status === 201 && JSON.parse(text).submission?.status === "published") {
          published++;
          onProgress?.(published);
          return;
        }
        reasons.push(`${response.status} ${text.slice(0, 300)}`);
        if (response.status < 500 && response.status !== 429) break;
        await sleep(500 * (attempt + 1));
      }
      failed.push({ name: `${capsule.name}@${capsule.version}`, reasons });
    },
    deadline,
  );
  return { published, failed, attempted, seconds: (performance.now() - started) / 1000 };
}
