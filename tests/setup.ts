import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

// Storage is isolated per test file; migrations are idempotent, so every file starts from the real schema.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);

// The Worker's info-level JSON lines (one access log per request) would drown the test output. Tests that
// read log lines spy on the console themselves, replacing this filter while they run.
const QUIET = Symbol.for("soma.tests.quietConsole");
const quiet = globalThis as unknown as Record<symbol, boolean>;
if (!quiet[QUIET]) {
  quiet[QUIET] = true;
  const log = console.log.bind(console);
  console.log = (...args: unknown[]) => {
    const [first] = args;
    if (typeof first === "string" && first.startsWith('{"time"') && first.includes('"level":"info"')) return;
    log(...args);
  };
}
