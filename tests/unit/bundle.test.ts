import { Gzip, gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { type BundleLimits, parseBundle } from "../../workers/shared/domain/bundle";
import { sha256Hex } from "../../workers/shared/encoding";
import { AppError } from "../../workers/shared/errors";
import { bundle, manifest, type RawEntry, tarGz } from "../helpers";

const MB = 1024 * 1024;
const limits: BundleLimits = { maxCompressedBytes: 10 * MB, maxUnpackedBytes: 50 * MB, maxEntries: 100 };
const ENTRYPOINT_BODY = "export default { async run() { return {}; } };\n";

interface ManifestDoc {
  apiVersion: unknown;
  kind: unknown;
  metadata: Record<string, unknown>;
  spec: Record<string, unknown>;
}

/** A valid manifest for a test to break in one place. */
function doc(name = "acme/sample"): ManifestDoc {
  return structuredClone(manifest({ name })) as unknown as ManifestDoc;
}

function bundleOf(m: ManifestDoc, extra: RawEntry[] = []): Promise<Uint8Array> {
  return tarGz([
    { name: "capsule.yaml", body: stringify(m) },
    { name: "dist/main.js", body: ENTRYPOINT_BODY },
    ...extra,
  ]);
}

async function refusal(bytes: Uint8Array, bundleLimits: BundleLimits = limits): Promise<AppError> {
  try {
    await parseBundle(bytes, bundleLimits);
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  return expect.fail("parseBundle accepted a bundle it should refuse");
}

function detailsOf(error: AppError): Record<string, unknown> {
  return (error.details ?? {}) as Record<string, unknown>;
}

function issuesOf(error: AppError): { path: string; message: string }[] {
  return (detailsOf(error).issues ?? []) as { path: string; message: string }[];
}

/** Gzips `size` zero bytes a megabyte at a time, so the test never holds the whole bomb in memory. */
function zeroBomb(size: number): Uint8Array {
  const out: Uint8Array[] = [];
  const gzip = new Gzip({ level: 9 }, (chunk) => out.push(chunk));
  const zeros = new Uint8Array(MB);
  for (let written = 0; written < size; written += MB) gzip.push(zeros, written + MB >= size);
  const bytes = new Uint8Array(out.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of out) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

describe("parseBundle: a valid bundle", () => {
  it("lists files sorted by path with their size and sha256, skipping directories", async () => {
    const bytes = await bundle({ name: "acme/sample" }, [
      { name: "dist/", type: "directory" },
      { name: "README.md", body: "# Sample\n" },
      { name: "./assets/logo.txt", body: "logo" },
    ]);
    const parsed = await parseBundle(bytes, limits);

    expect(parsed.files.map((f) => f.path)).toEqual([
      "README.md",
      "assets/logo.txt",
      "capsule.yaml",
      "dist/main.js",
    ]);
    for (const file of parsed.files) {
      const data = parsed.contents.get(file.path);
      expect(data).toBeDefined();
      expect(file.size).toBe(data?.length);
      expect(file.sha256).toBe(await sha256Hex(data ?? new Uint8Array(0)));
    }
    const readme = parsed.files.find((f) => f.path === "README.md");
    expect(readme?.sha256).toBe(await sha256Hex("# Sample\n"));
    expect(parsed.unpackedBytes).toBe(parsed.files.reduce((n, f) => n + f.size, 0));
  });

  it("reports the sha256 and size of the tarball exactly as uploaded", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    const parsed = await parseBundle(bytes, limits);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
    expect(parsed.sha256).toBe(Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""));
    expect(parsed.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(parsed.size).toBe(bytes.length);
  });

  it("applies manifest defaults for omitted optional fields and keeps the raw text", async () => {
    const m = doc();
    delete m.metadata.tags;
    for (const key of ["permissions", "dependencies", "tokenEstimate", "inputs", "outputs", "pricing"]) {
      delete m.spec[key];
    }
    const parsed = await parseBundle(await bundleOf(m), limits);

    expect(parsed.manifest.metadata.tags).toEqual([]);
    expect(parsed.manifest.spec.permissions).toEqual([]);
    expect(parsed.manifest.spec.dependencies).toEqual({});
    expect(parsed.manifest.spec.tokenEstimate).toEqual({ planning: 0, execution: 0 });
    expect(parsed.manifest.spec.inputs).toEqual({ type: "object" });
    expect(parsed.manifest.spec.outputs).toEqual({ type: "object" });
    expect(parsed.manifest.spec.pricing).toEqual({ model: "free", amountUsd: 0 });
    expect(parsed.manifestText).toBe(stringify(m));
  });

  it("accepts an entrypoint written with a leading ./", async () => {
    const m = doc();
    m.spec.entrypoint = "./dist/main.js";
    const parsed = await parseBundle(await bundleOf(m), limits);
    expect(parsed.manifest.spec.entrypoint).toBe("./dist/main.js");
  });

  it("accepts a bundle exactly at the compressed and entry limits", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    const parsed = await parseBundle(bytes, { ...limits, maxCompressedBytes: bytes.length, maxEntries: 2 });
    expect(parsed.files).toHaveLength(2);
  });
});

describe("parseBundle: the container format", () => {
  it("rejects bytes that are not gzip", async () => {
    const error = await refusal(new TextEncoder().encode("capsule.yaml: plain text, not an archive\n"));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/not gzip/);
  });

  it("rejects a zip archive uploaded in place of a tar.gz", async () => {
    const zipLike = new Uint8Array(64);
    zipLike.set([0x50, 0x4b, 0x03, 0x04]);
    const error = await refusal(zipLike);
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/not gzip/);
  });

  it("rejects gzip of random bytes as not a tar archive", async () => {
    const error = await refusal(gzipSync(crypto.getRandomValues(new Uint8Array(4096))));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/tar/);
  });

  it("rejects gzip of plain text as not a tar archive", async () => {
    const error = await refusal(gzipSync(new TextEncoder().encode("just some text, no tar headers\n")));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/tar/);
  });

  it("rejects gzip of an empty tar (only end-of-archive blocks)", async () => {
    const error = await refusal(gzipSync(new Uint8Array(1024)));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/tar archive or is empty/);
  });

  it("rejects a gzip stream cut off in the middle", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    const error = await refusal(bytes.subarray(0, Math.floor(bytes.length / 2)));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/gzip stream is corrupt/);
  });

  it("rejects a gzip stream followed by trailing garbage", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    const padded = new Uint8Array(bytes.length + 32).fill(0x41);
    padded.set(bytes);
    const error = await refusal(padded);
    expect(error.code).toBe("INVALID_BUNDLE");
  });

  // fflate's streaming Gunzip neither requires the 8-byte trailer nor checks CRC32/ISIZE, so these corrupt
  // uploads are accepted and would be signed although `gzip -t` and `tar -xzf` refuse them.
  it("rejects a gzip stream whose 8-byte CRC32/ISIZE trailer was cut off", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    const error = await refusal(bytes.subarray(0, bytes.length - 8));
    expect(error.code).toBe("INVALID_BUNDLE");
  });

  it("rejects a gzip stream whose CRC32 does not match its contents", async () => {
    const bytes = (await bundle({ name: "acme/sample" })).slice();
    bytes[bytes.length - 8] = (bytes[bytes.length - 8] ?? 0) ^ 0xff;
    const error = await refusal(bytes);
    expect(error.code).toBe("INVALID_BUNDLE");
  });
});

describe("parseBundle: limits", () => {
  it("rejects a bundle larger than maxCompressedBytes before unpacking it", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    const error = await refusal(bytes, { ...limits, maxCompressedBytes: bytes.length - 1 });
    expect(error.code).toBe("PAYLOAD_TOO_LARGE");
    expect(detailsOf(error)).toMatchObject({ limit: "compressed", maxBytes: bytes.length - 1 });
  });

  it("stops a gzip bomb at maxUnpackedBytes", async () => {
    const bomb = zeroBomb(60 * MB);
    expect(bomb.length).toBeLessThan(200 * 1024);
    const error = await refusal(bomb, { ...limits, maxUnpackedBytes: 50 * MB });
    expect(error.code).toBe("PAYLOAD_TOO_LARGE");
    expect(detailsOf(error)).toMatchObject({ limit: "unpacked", maxBytes: 50 * MB });
  });

  // The native decoder reads one gzip member and treats anything after it as corruption, so a bomb split over
  // members is refused before it can inflate past the first megabyte.
  it("refuses a bomb split over many concatenated gzip members", async () => {
    const member = gzipSync(new Uint8Array(MB), { level: 9 });
    const bomb = new Uint8Array(member.length * 60);
    for (let i = 0; i < 60; i++) bomb.set(member, i * member.length);
    const error = await refusal(bomb, { ...limits, maxUnpackedBytes: 50 * MB });
    expect(["INVALID_BUNDLE", "PAYLOAD_TOO_LARGE"]).toContain(error.code);
  });

  it("counts tar headers against maxUnpackedBytes, not only file bodies", async () => {
    const bytes = await bundle({ name: "acme/sample" });
    // Each entry costs at least a 512-byte header plus padding, so a tiny limit trips on the tar itself.
    const error = await refusal(bytes, { ...limits, maxUnpackedBytes: 1024 });
    expect(error.code).toBe("PAYLOAD_TOO_LARGE");
    expect(detailsOf(error).limit).toBe("unpacked");
  });

  it("rejects more entries than maxEntries", async () => {
    const extra = Array.from({ length: 5 }, (_, i) => ({ name: `docs/${i}.md`, body: `${i}` }));
    const error = await refusal(await bundle({ name: "acme/sample" }, extra), { ...limits, maxEntries: 6 });
    expect(error.code).toBe("PAYLOAD_TOO_LARGE");
    expect(detailsOf(error)).toMatchObject({ limit: "entries", maxEntries: 6 });
  });
});

describe("parseBundle: hostile entries", () => {
  it.each([
    ["../evil.js", /escapes/],
    ["dist/../../x", /escapes/],
    ["dist/./main.js", /escapes or aliases/],
    ["dist//main2.js", /escapes or aliases/],
    [`${"deep/".repeat(30)}../../../x.js`, /escapes/],
    ["/etc/passwd", /absolute path/],
    ["C:/Windows/evil.js", /absolute path/],
    ["dist\\..\\evil.js", /backslash/],
  ])("rejects a bundle with entry path %j", async (name, why) => {
    const error = await refusal(await bundle({ name: "acme/sample" }, [{ name, body: "x" }]));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toContain(name);
    expect(error.message).toMatch(why);
    expect(detailsOf(error).entry).toBe(name);
  });

  it("rejects a symlink entry even when it points inside the bundle", async () => {
    const error = await refusal(
      await bundle({ name: "acme/sample" }, [
        { name: "dist/alias.js", type: "symlink", linkname: "main.js" },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/"dist\/alias\.js" is a link/);
    expect(detailsOf(error).entry).toBe("dist/alias.js");
  });

  it("rejects a symlink entry pointing outside the bundle", async () => {
    const error = await refusal(
      await bundle({ name: "acme/sample" }, [{ name: "dist/pw", type: "symlink", linkname: "/etc/passwd" }]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(detailsOf(error).entry).toBe("dist/pw");
  });

  it("rejects a hardlink entry", async () => {
    const error = await refusal(
      await bundle({ name: "acme/sample" }, [
        { name: "dist/hard.js", type: "link", linkname: "capsule.yaml" },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/"dist\/hard\.js" is a link/);
    expect(detailsOf(error).entry).toBe("dist/hard.js");
  });

  it("rejects a device entry", async () => {
    const encoder = new TextEncoder();
    const yaml = encoder.encode(stringify(doc()));
    const main = encoder.encode(ENTRYPOINT_BODY);
    // The shared tarGz helper only writes files, directories and links, so pack this one directly.
    const tar = await packTar([
      { header: { name: "capsule.yaml", type: "file", size: yaml.length }, body: yaml },
      { header: { name: "dist/main.js", type: "file", size: main.length }, body: main },
      { header: { name: "dev/tty", type: "character-device", size: 0 } },
    ]);
    const error = await refusal(gzipSync(tar));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/"dev\/tty" is a character-device/);
  });

  it("rejects the same path twice", async () => {
    const error = await refusal(
      await bundle({ name: "acme/sample" }, [{ name: "dist/main.js", body: "export default {};\n" }]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/"dist\/main\.js" appears more than once/);
    expect(detailsOf(error).entry).toBe("dist/main.js");
  });

  it("rejects ./a and a as the same path", async () => {
    const error = await refusal(
      await bundle({ name: "acme/sample" }, [
        { name: "./notes.txt", body: "first" },
        { name: "notes.txt", body: "second" },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(detailsOf(error).entry).toBe("notes.txt");
  });

  it("rejects a second capsule.yaml that would shadow the first", async () => {
    const shadow = doc();
    shadow.spec.permissions = ["runner.exec"];
    const error = await refusal(
      await bundle({ name: "acme/sample" }, [{ name: "./capsule.yaml", body: stringify(shadow) }]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(detailsOf(error).entry).toBe("capsule.yaml");
  });
});

describe("parseBundle: the manifest", () => {
  it("rejects a bundle without capsule.yaml", async () => {
    const error = await refusal(await tarGz([{ name: "dist/main.js", body: ENTRYPOINT_BODY }]));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toContain("capsule.yaml");
    expect(detailsOf(error).entry).toBe("capsule.yaml");
  });

  it("rejects a capsule.yaml that is only in a subfolder", async () => {
    const error = await refusal(
      await tarGz([
        { name: "pkg/capsule.yaml", body: stringify(doc()) },
        { name: "dist/main.js", body: ENTRYPOINT_BODY },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/no capsule\.yaml at its root/);
  });

  it.each([
    ["broken flow syntax", "metadata: { name: [unclosed\n"],
    ["a duplicate key", "apiVersion: soma.dev/v1\napiVersion: soma.dev/v2\n"],
    ["a tab-indented block", "metadata:\n\tname: acme/x\n"],
  ])("rejects a capsule.yaml with %s as not YAML", async (_label, text) => {
    const error = await refusal(
      await tarGz([
        { name: "capsule.yaml", body: text },
        { name: "dist/main.js", body: ENTRYPOINT_BODY },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/capsule\.yaml is not valid YAML/);
    expect(detailsOf(error).entry).toBe("capsule.yaml");
  });

  it("rejects a capsule.yaml that is not UTF-8", async () => {
    const error = await refusal(
      await tarGz([
        { name: "capsule.yaml", body: new Uint8Array([0x6b, 0x3a, 0x20, 0xff, 0xfe, 0x0a]) },
        { name: "dist/main.js", body: ENTRYPOINT_BODY },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toMatch(/not valid YAML/);
  });

  it("rejects a YAML alias bomb instead of expanding it", async () => {
    const lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 12; i++) {
      const refs = Array.from({ length: 10 }, () => `*a${i - 1}`).join(", ");
      lines.push(`a${i}: &a${i} [${refs}]`);
    }
    const error = await refusal(
      await tarGz([
        { name: "capsule.yaml", body: `${lines.join("\n")}\n` },
        { name: "dist/main.js", body: ENTRYPOINT_BODY },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(detailsOf(error).entry).toBe("capsule.yaml");
  });

  it("rejects a capsule.yaml that is a YAML scalar rather than a mapping", async () => {
    const error = await refusal(
      await tarGz([
        { name: "capsule.yaml", body: "just a sentence\n" },
        { name: "dist/main.js", body: ENTRYPOINT_BODY },
      ]),
    );
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(issuesOf(error).map((i) => i.path)).toContain("(root)");
  });

  /** [what is wrong, where the change goes, the field, its new value (undefined deletes it), the issue path]. */
  const invalidManifests: [string, "root" | "metadata" | "spec", string, unknown, string][] = [
    ["a wrong apiVersion", "root", "apiVersion", "soma.dev/v2", "apiVersion"],
    ["a wrong kind", "root", "kind", "Capsule", "kind"],
    ["no metadata.license", "metadata", "license", undefined, "metadata.license"],
    ["version 1.0", "metadata", "version", "1.0", "metadata.version"],
    ["version v1.0.0", "metadata", "version", "v1.0.0", "metadata.version"],
    ["version 1.0.0 with a leading space", "metadata", "version", " 1.0.0", "metadata.version"],
    ["name Acme/X", "metadata", "name", "Acme/X", "metadata.name"],
    ["a name without a namespace", "metadata", "name", "sample", "metadata.name"],
    ["an unknown category", "metadata", "category", "Games", "metadata.category"],
    ["permission network.egress:", "spec", "permissions", ["network.egress:"], "spec.permissions.0"],
    ["permission network.egress:*", "spec", "permissions", ["llm", "network.egress:*"], "spec.permissions.1"],
    ["an unknown permission", "spec", "permissions", ["root"], "spec.permissions.0"],
    ["a repeated permission", "spec", "permissions", ["llm", "llm"], "spec.permissions"],
    [
      "an invalid dependency range",
      "spec",
      "dependencies",
      { "acme/other": "not a range" },
      "spec.dependencies.acme/other",
    ],
    [
      "a dependency on itself",
      "spec",
      "dependencies",
      { "acme/sample": "^1.0.0" },
      "spec.dependencies.acme/sample",
    ],
    [
      "free pricing with amountUsd 1",
      "spec",
      "pricing",
      { model: "free", amountUsd: 1 },
      "spec.pricing.amountUsd",
    ],
    [
      "per_execution pricing with amountUsd 0",
      "spec",
      "pricing",
      { model: "per_execution", amountUsd: 0 },
      "spec.pricing.amountUsd",
    ],
    ["an entrypoint outside the bundle", "spec", "entrypoint", "../main.js", "spec.entrypoint"],
    ["an absolute entrypoint", "spec", "entrypoint", "/dist/main.js", "spec.entrypoint"],
  ];

  it.each(invalidManifests)(
    "rejects a manifest with %s, naming the field",
    async (_label, section, field, value, path) => {
      const m = doc();
      const target: Record<string, unknown> =
        section === "root" ? (m as unknown as Record<string, unknown>) : m[section];
      if (value === undefined) delete target[field];
      else target[field] = value;
      const error = await refusal(await bundleOf(m));
      expect(error.code).toBe("INVALID_BUNDLE");
      expect(detailsOf(error).entry).toBe("capsule.yaml");
      expect(issuesOf(error).map((i) => i.path)).toContain(path);
      expect(error.message).toContain(path);
    },
  );

  it("rejects an unknown field in spec, naming spec and the key", async () => {
    const m = doc();
    m.spec.sandbox = "off";
    const error = await refusal(await bundleOf(m));
    expect(error.code).toBe("INVALID_BUNDLE");
    const issue = issuesOf(error).find((i) => i.path === "spec");
    expect(issue?.message).toContain("sandbox");
  });

  it("rejects an unknown top-level field", async () => {
    const m = { ...doc(), status: "approved" };
    const error = await refusal(await bundleOf(m));
    expect(error.code).toBe("INVALID_BUNDLE");
    const issue = issuesOf(error).find((i) => i.path === "(root)");
    expect(issue?.message).toContain("status");
  });

  it("lists every invalid field, not only the first", async () => {
    const m = doc();
    m.metadata.version = "1.0";
    m.spec.permissions = ["network.egress:"];
    const error = await refusal(await bundleOf(m));
    expect(issuesOf(error).map((i) => i.path)).toEqual(
      expect.arrayContaining(["metadata.version", "spec.permissions.0"]),
    );
  });

  it("rejects a manifest whose entrypoint is not in the bundle", async () => {
    const m = doc();
    m.spec.entrypoint = "dist/missing.js";
    const error = await refusal(await bundleOf(m));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(error.message).toContain("dist/missing.js");
    expect(detailsOf(error)).toMatchObject({ entry: "dist/missing.js", path: "spec.entrypoint" });
  });

  it("rejects an entrypoint that names a directory", async () => {
    const m = doc();
    m.spec.entrypoint = "dist";
    const error = await refusal(await bundleOf(m, [{ name: "dist/", type: "directory" }]));
    expect(error.code).toBe("INVALID_BUNDLE");
    expect(detailsOf(error).path).toBe("spec.entrypoint");
  });
});
