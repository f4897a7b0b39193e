import { generateKeyPairSync, randomBytes } from "node:crypto";
import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

const root = path.resolve(import.meta.dirname, "..");

function p256Pem(): string {
  return generateKeyPairSync("ec", { namedCurve: "prime256v1" })
    .privateKey.export({ type: "pkcs8", format: "pem" })
    .toString();
}

/** Fresh signing keys per run: tests verify against what the platform publishes, never a fixed key. */
export const testSecrets = {
  CAPSULE_SIGNING_KEY: p256Pem(),
  AUTH_SIGNING_KEY: p256Pem(),
  SOMA_ADMIN_TOKEN: `test-admin-${randomBytes(16).toString("hex")}`,
};

// The plugin reads required secrets from process.env; give it the same generated values.
Object.assign(process.env, testSecrets);

export default defineConfig(async () => {
  const d1Migrations = await readD1Migrations(path.join(root, "migrations"));
  return {
    plugins: [
      // A function of the globalSetup's values: the ClickHouse it started is known only once it runs.
      cloudflareTest(({ inject }) => {
        const clickhouse = inject("clickhouse");
        // Also where the plugin looks for secrets that wrangler.toml declares required.
        process.env.CLICKHOUSE_PASSWORD = clickhouse.password;
        return {
          main: path.join(root, "workers/index.ts"),
          wrangler: { configPath: path.join(root, "wrangler.toml") },
          miniflare: {
            bindings: {
              ...testSecrets,
              // Fast retries and short leases keep the KAMACHIQ tests quick; the logic is the same at any scale.
              KAMACHIQ_RETRY_BASE_MS: "50",
              // Unconfirmed coordinator events go out again after 2 s instead of 30 s.
              EVENT_RESEND_MS: "2000",
              // The platform's price for the test model provider's model, per 1,000 tokens (micro-USD).
              MODEL_PRICES: JSON.stringify({ "gpt-4o-mini": 1_000_000 }),
              // The optional scrape-only token of GET /metrics.
              METRICS_TOKEN: `test-metrics-${randomBytes(16).toString("hex")}`,
              CLICKHOUSE_URL: clickhouse.url,
              CLICKHOUSE_DATABASE: clickhouse.database,
              CLICKHOUSE_USER: clickhouse.user,
              CLICKHOUSE_PASSWORD: clickhouse.password,
              TEST_MIGRATIONS: d1Migrations,
            },
          },
        };
      }),
    ],
    test: {
      root,
      include: ["tests/{unit,api,durable-objects,consumers}/**/*.test.ts"],
      globalSetup: [
        path.join(root, "tests/clickhouse-global-setup.ts"),
        path.join(root, "tests/model-provider-global-setup.ts"),
        path.join(root, "tests/egress-global-setup.ts"),
      ],
      setupFiles: [path.join(root, "tests/setup.ts")],
      testTimeout: 30_000,
      // Console output goes straight to workerd's stdout instead of through Vitest's per-file log RPC. A line
      // logged from another I/O context (a queue consumer, an alarm, a waitUntil task) during a file's last
      // RPC is parked by the pool and never sent, and Vitest then waits for it forever
      // (cloudflare/workers-sdk#15719). tests/setup.ts drops the Worker's info-level lines instead.
      disableConsoleIntercept: true,
    },
  };
});
