#!/usr/bin/env node
// Replays dead-lettered queue messages through the API: `npm run events:replay -- [--queue soma-events]
// [--limit 1000] [--url http://127.0.0.1:8787] [--token <admin token>]` (or SOMA_URL / SOMA_ADMIN_TOKEN).
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    queue: { type: "string", default: "soma-events" },
    limit: { type: "string", default: "1000" },
    url: { type: "string", default: process.env.SOMA_URL ?? "http://127.0.0.1:8787" },
    token: { type: "string", default: process.env.SOMA_ADMIN_TOKEN ?? process.env.SOMA_TOKEN ?? "" },
    "dry-run": { type: "boolean", default: false },
  },
});
if (!values.token) {
  console.error("Pass --token <admin token> (or set SOMA_ADMIN_TOKEN)");
  process.exit(2);
}
const headers = { authorization: `Bearer ${values.token}`, "content-type": "application/json" };
const base = values.url.replace(/\/$/, "");
const list = await fetch(
  `${base}/v1/admin/dead-letters?queue=${encodeURIComponent(values.queue)}&limit=${values.limit}`,
  { headers },
);
if (!list.ok) {
  console.error(`Listing dead letters failed: ${list.status} ${await list.text()}`);
  process.exit(1);
}
const { items } = await list.json();
console.log(`${items.length} dead letter(s) in ${values.queue}`);
for (const item of items.slice(0, 20)) console.log(`  ${item.id}  ${item.createdAt}  ${item.reason}`);
if (values["dry-run"] || items.length === 0) process.exit(0);
const replay = await fetch(`${base}/v1/admin/dead-letters/replay`, {
  method: "POST",
  headers,
  body: JSON.stringify({ queue: values.queue, limit: Number(values.limit) }),
});
if (!replay.ok) {
  console.error(`Replay failed: ${replay.status} ${await replay.text()}`);
  process.exit(1);
}
console.log(`Replayed ${(await replay.json()).replayed} message(s) to ${values.queue}`);
