import type { D1Migration } from "cloudflare:test";

declare global {
  namespace Cloudflare {
    interface Env {
      TEST_MIGRATIONS: D1Migration[];
      /** Optional in production (wrangler secret put METRICS_TOKEN); the tests set one. */
      METRICS_TOKEN: string;
      /** A secret in wrangler.toml terms; the tests pass the test server's (empty unless external). */
      CLICKHOUSE_PASSWORD: string;
    }
  }
}

declare module "vitest" {
  export interface ProvidedContext {
    /** The test ClickHouse behind tests/clickhouse-global-setup.ts's connection-dropping proxy. */
    clickhouseFaultProxy: { url: string };
  }
}
