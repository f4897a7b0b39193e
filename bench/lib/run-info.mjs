import { readFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";

/** The machine a bench ran on, with the load average at the moment of asking. */
export function machine() {
  const list = cpus();
  return {
    cores: list.length,
    cpu: list[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadAverage: loadavg().map((v) => Number(v.toFixed(2))),
  };
}

/**
 * Node's version and the installed versions of the runtime packages, plus `extra` package names.
 * @param {string} root the repository root
 * @param {string[]} [extra]
 */
export async function versions(root, extra = []) {
  const read = async (name) =>
    JSON.parse(await readFile(join(root, "node_modules", name, "package.json"), "utf8")).version;
  const found = { node: process.versions.node };
  for (const name of ["wrangler", "miniflare", "workerd", ...extra]) found[name] = await read(name);
  return found;
}
