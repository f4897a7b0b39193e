import type { D1Migration } from "cloudflare:test";

declare global {
  namespace Cloudflare {
    interface Env {
      TEST_MIGRATIONS: D1Migration[];
      /** Optional in production (wrangler secret put METRICS_TOKEN); the tests set one. */
      METRICS_TOKEN: string;
    }
  }
}
