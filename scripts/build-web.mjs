import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "vite";

/**
 * Builds the browser app (web/, Vite + Preact) into web/dist, where wrangler serves static assets from.
 * @param {string} root the repository root
 * @returns {Promise<string>} the output directory
 */
export async function buildWeb(root) {
  const source = join(root, "web");
  await build({ configFile: join(source, "vite.config.ts"), root: source, logLevel: "warn" });
  return join(source, "dist");
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = await buildWeb(resolve(dirname(fileURLToPath(import.meta.url)), ".."));
  console.log(`web app built into ${out}`);
}
