import { readdir, stat } from "node:fs/promises";
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

/** Newest modification time (ms) of the files under `dir`, skipping the folders named in `skip`. */
async function newestMtime(dir, skip) {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (skip.has(entry.name)) continue;
    const path = join(dir, entry.name);
    const time = entry.isDirectory() ? await newestMtime(path, skip) : (await stat(path)).mtimeMs;
    newest = Math.max(newest, time);
  }
  return newest;
}

/**
 * Builds the web app unless web/dist is newer than every source of it. A rebuild empties web/dist first, so
 * skipping an unneeded one keeps another platform already serving this checkout's web/dist from losing its
 * assets half-way.
 * @param {string} root the repository root
 * @returns {Promise<{ out: string, built: boolean }>}
 */
export async function buildWebIfStale(root) {
  const source = join(root, "web");
  const out = join(source, "dist");
  const built = await stat(join(out, "index.html")).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  const inputs = Math.max(
    await newestMtime(source, new Set(["dist", "node_modules"])),
    ...(await Promise.all(
      ["package-lock.json"].map((file) =>
        stat(join(root, file)).then(
          (s) => s.mtimeMs,
          () => 0,
        ),
      ),
    )),
  );
  if (built > inputs) return { out, built: false };
  await buildWeb(root);
  return { out, built: true };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = await buildWeb(resolve(dirname(fileURLToPath(import.meta.url)), ".."));
  console.log(`web app built into ${out}`);
}
