import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PAGE_FILES = /(\.(html|css|js|svg|png|ico|webmanifest|txt)|^_headers)$/;

/**
 * Builds the browser app into web/dist, where wrangler serves static assets from. The app is a placeholder
 * page for now, so building is copying its files.
 * @param {string} root the repository root
 * @returns {Promise<string>} the output directory
 */
export async function buildWeb(root) {
  const source = join(root, "web");
  const out = join(source, "dist");
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  for (const entry of await readdir(source, { withFileTypes: true })) {
    if (entry.isFile() && PAGE_FILES.test(entry.name)) {
      await copyFile(join(source, entry.name), join(out, entry.name));
    }
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = await buildWeb(resolve(dirname(fileURLToPath(import.meta.url)), ".."));
  console.log(`web app built into ${out}`);
}
