#!/usr/bin/env node
// Re-imports one archived day of raw events into ClickHouse through the API: `npm run analytics:reimport --
// --day 2026-10-01 [--keep-days 7] [--url http://127.0.0.1:8787] [--token <admin token>]` (or SOMA_URL /
// SOMA_ADMIN_TOKEN). `--list` prints the archived days instead.
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    day: { type: "string" },
    "keep-days": { type: "string" },
    list: { type: "boolean", default: false },
    url: { type: "string", default: process.env.SOMA_URL ?? "http://127.0.0.1:8787" },
    token: { type: "string", default: process.env.SOMA_ADMIN_TOKEN ?? process.env.SOMA_TOKEN ?? "" },
  },
});
if (!values.token) {
  console.error("Pass --token <admin token> (or set SOMA_ADMIN_TOKEN)");
  process.exit(2);
}
if (!values.list && !/^\d{4}-\d{2}-\d{2}$/.test(values.day ?? "")) {
  console.error("Pass --day YYYY-MM-DD (the archived day to re-import), or --list");
  process.exit(2);
}
const headers = { authorization: `Bearer ${values.token}`, "content-type": "application/json" };
const base = `${values.url.replace(/\/$/, "")}/v1/admin/analytics`;

if (values.list) {
  const res = await fetch(`${base}/archive`, { headers });
  if (!res.ok) {
    console.error(`Listing the archive failed: ${res.status} ${await res.text()}`);
    process.exit(1);
  }
  const { items } = await res.json();
  console.log(`${items.length} archived day(s)`);
  for (const item of items)
    console.log(
      `  ${item.day}  ${item.rows} events${item.restoredUntil ? `  hot until ${item.restoredUntil}` : ""}`,
    );
  process.exit(0);
}

const body = { day: values.day };
if (values["keep-days"] !== undefined) body.keepDays = Number(values["keep-days"]);
const res = await fetch(`${base}/reimport`, { method: "POST", headers, body: JSON.stringify(body) });
if (!res.ok) {
  console.error(`Re-import of ${values.day} failed: ${res.status} ${await res.text()}`);
  process.exit(1);
}
const result = await res.json();
console.log(`Re-imported ${result.rows} event(s) of ${result.day}; kept hot until ${result.keptUntil}`);
