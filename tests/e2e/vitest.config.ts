import path from "node:path";
import { defineConfig } from "vitest/config";

const root = path.resolve(import.meta.dirname, "../..");

/**
 * Multi-process tests in Node against the platform as `npm start` runs it (wrangler dev, workerd, real local
 * bindings). One platform is shared by every file, so files run one at a time.
 */
export default defineConfig({
  test: {
    root,
    include: ["tests/e2e/**/*.test.ts"],
    environment: "node",
    globalSetup: [path.join(root, "tests/e2e/global-setup.ts")],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    teardownTimeout: 60_000,
  },
});
