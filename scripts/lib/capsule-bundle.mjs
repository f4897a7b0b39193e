import { readdir, readFile } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { parse as parseYaml } from "yaml";

/** Entries never shipped in a bundle: VCS and OS litter, local dependencies. */
const SKIPPED = new Set([".git", ".DS_Store", "node_modules"]);

/** A fixed timestamp keeps bundles of the same sources byte-identical, so their digests are reproducible. */
const EPOCH = new Date("2026-01-01T00:00:00Z");

async function listFiles(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (SKIPPED.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/**
 * Packs a capsule source folder into a .tar.gz (capsule.yaml at the root) and reads its name and version.
 * @param {string} dir the folder holding capsule.yaml
 * @returns {Promise<{ name: string, version: string, bytes: Uint8Array }>}
 */
export async function packCapsule(dir) {
  const manifest = parseYaml(await readFile(join(dir, "capsule.yaml"), "utf8"));
  const name = manifest?.metadata?.name;
  const version = manifest?.metadata?.version;
  if (typeof name !== "string" || typeof version !== "string") {
    throw new Error(`${join(dir, "capsule.yaml")} has no metadata.name or metadata.version`);
  }
  const files = (await listFiles(dir)).map((path) => relative(dir, path).split(sep).join("/")).sort();
  const entries = [];
  for (const file of files) {
    const body = new Uint8Array(await readFile(join(dir, file)));
    entries.push({
      header: { name: file, size: body.length, type: "file", mode: 0o644, mtime: EPOCH },
      body,
    });
  }
  const tar = await packTar(entries);
  return { name, version, bytes: gzipSync(tar, { level: 9, mtime: EPOCH }) };
}

/**
 * The first-party capsule folders: every capsules/<folder>/ holding a capsule.yaml, in name order.
 * @param {string} root the repository root
 */
export async function firstPartyCapsuleDirs(root) {
  const base = join(root, "capsules");
  const dirs = [];
  for (const entry of await readdir(base, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const dir = join(base, entry.name);
    const children = await readdir(dir);
    if (children.includes("capsule.yaml")) dirs.push(dir);
  }
  return dirs.sort();
}
