import { describe, expect, it } from "vitest";
import { type CapsuleManifest, manifestSchema } from "../../workers/shared/domain/manifest";
import { AUTO_APPROVE_BELOW, assessRisk, type RiskAssessment } from "../../workers/shared/domain/risk";
import { type ManifestInput, manifest } from "../helpers";

const SAFE_CODE = "export default { async run(input) { return { echoed: input }; } };\n";

function capsule(input: Partial<ManifestInput> = {}): CapsuleManifest {
  return manifestSchema.parse(manifest({ name: "acme/sample", ...input }));
}

function files(entries: Record<string, string>): Map<string, Uint8Array> {
  const encoder = new TextEncoder();
  return new Map(Object.entries(entries).map(([path, text]) => [path, encoder.encode(text)]));
}

function assess(
  input: Partial<ManifestInput>,
  code: Record<string, string> = {},
  size = 2048,
): RiskAssessment {
  return assessRisk(capsule(input), files({ "dist/main.js": SAFE_CODE, ...code }), size);
}

function ids(result: RiskAssessment): string[] {
  return result.findings.map((f) => f.id);
}

describe("assessRisk", () => {
  it("scores a plain capsule that only reads artefacts below the auto-approve threshold", () => {
    const result = assess({ permissions: ["artifacts.read"] });
    expect(result.score).toBeLessThan(AUTO_APPROVE_BELOW);
    expect(result.score).toBeGreaterThan(0);
    expect(ids(result)).toEqual(["permission:artifacts.read"]);
  });

  it("scores a capsule with no permissions and clean code at 0", () => {
    const result = assess({ permissions: [] });
    expect(result.score).toBe(0);
    expect(result.findings).toEqual([]);
  });

  it("reports eval in a .js file as a high finding with file and line, enough to need review", () => {
    const result = assess(
      { permissions: ["artifacts.read"] },
      { "dist/helper.js": "const x = 1;\n// harmless\nexport const run = (s) => eval(s);\n" },
    );
    const finding = result.findings.find((f) => f.id === "dynamic-code-eval");
    expect(finding).toMatchObject({ severity: "high", file: "dist/helper.js", line: 3 });
    expect(result.score).toBeGreaterThanOrEqual(AUTO_APPROVE_BELOW);
    expect(result.score).toBeGreaterThanOrEqual(0.3);
  });

  it("reports one eval finding per file, at its first line", () => {
    const result = assess({}, { "dist/a.js": "eval('1');\neval('2');\n", "dist/b.mjs": "\n\neval ('3');\n" });
    const evals = result.findings.filter((f) => f.id === "dynamic-code-eval");
    expect(evals.map((f) => [f.file, f.line])).toEqual([
      ["dist/a.js", 1],
      ["dist/b.mjs", 3],
    ]);
  });

  it("does not scan files that are not code", () => {
    const result = assess({}, { "README.md": "Never call eval(input) or fetch(url) in a capsule.\n" });
    expect(ids(result)).not.toContain("dynamic-code-eval");
    expect(ids(result)).not.toContain("undeclared-network");
  });

  it("does not mistake identifiers containing eval for eval", () => {
    const result = assess({}, { "dist/x.js": "const retrieval = medieval(1);\nconst evaluate = 2;\n" });
    expect(ids(result)).not.toContain("dynamic-code-eval");
  });

  it.each([
    ["new Function", "dist/x.js", "const f = new Function('a', 'return a');\n", "dynamic-code-function"],
    ["a computed import", "dist/x.js", "const m = await import(moduleName);\n", "dynamic-import"],
    ["child_process", "dist/x.cjs", "const cp = require('child_process');\n", "process-spawn"],
    ["python exec of compiled code", "tools/run.py", "exec(compile(src, 'x', 'exec'))\n", "python-exec"],
  ])("flags %s", (_label, path, code, id) => {
    const result = assess({}, { [path]: code });
    expect(result.findings.find((f) => f.id === id)).toMatchObject({ file: path, line: 1 });
  });

  it("does not flag a static import", () => {
    const result = assess({}, { "dist/x.js": 'const m = await import("./local.js");\n' });
    expect(ids(result)).not.toContain("dynamic-import");
  });

  it("flags fetch without any declared egress host as undeclared-network", () => {
    const result = assess(
      { permissions: ["artifacts.read"] },
      { "dist/net.js": "export async function get() {\n  return fetch('https://example.com');\n}\n" },
    );
    expect(result.findings.find((f) => f.id === "undeclared-network")).toMatchObject({
      file: "dist/net.js",
      line: 2,
    });
  });

  it("does not flag fetch when an egress host is declared", () => {
    const result = assess(
      { permissions: ["network.egress:api.example.com"] },
      { "dist/net.js": "await fetch('https://api.example.com/v1');\n" },
    );
    expect(ids(result)).not.toContain("undeclared-network");
  });

  it("raises the score for an egress host and more for a wildcard host", () => {
    const base = assess({ permissions: ["artifacts.read"] }).score;
    const host = assess({ permissions: ["artifacts.read", "network.egress:api.example.com"] });
    const wildcard = assess({ permissions: ["artifacts.read", "network.egress:*.example.com"] });
    expect(host.score).toBeGreaterThan(base);
    expect(wildcard.score).toBeGreaterThan(host.score);
    expect(host.findings.find((f) => f.id === "egress:api.example.com")?.severity).toBe("medium");
    expect(wildcard.findings.find((f) => f.id === "egress:*.example.com")?.severity).toBe("high");
  });

  it("raises the score with each additional egress host", () => {
    const one = assess({ permissions: ["network.egress:a.example.com"] }).score;
    const two = assess({
      permissions: ["network.egress:a.example.com", "network.egress:b.example.com"],
    }).score;
    expect(two).toBeGreaterThan(one);
  });

  it("raises the score for the runner runtime, dependencies and a large bundle", () => {
    const base = assess({}).score;
    expect(assess({ runtime: "runner" }).score).toBeGreaterThan(base);
    expect(assess({ dependencies: { "acme/other": "^1.0.0" } }).score).toBeGreaterThan(base);
    expect(assess({}, {}, 2 * 1024 * 1024).score).toBeGreaterThan(base);
    expect(assess({}, {}, 5 * 1024 * 1024).score).toBeGreaterThan(assess({}, {}, 2 * 1024 * 1024).score);
  });

  it("never lowers the score when a permission is added", () => {
    const all = [
      "artifacts.read",
      "logging",
      "artifacts.write",
      "llm",
      "runner.exec",
      "network.egress:api.example.com",
      "network.egress:*.example.org",
    ];
    let previous = -1;
    for (let n = 0; n <= all.length; n++) {
      const { score } = assess({ permissions: all.slice(0, n) });
      expect(score).toBeGreaterThanOrEqual(previous);
      previous = score;
    }
  });

  it("keeps the score within [0, 1] when everything risky is present at once", () => {
    const hosts = Array.from({ length: 26 }, (_, i) => `network.egress:*.h${i}.example.com`);
    const code = [
      "eval(x);",
      "new Function('a', 'b');",
      "import(name);",
      "require('child_process');",
      `const blob = "${"A".repeat(2100)}";`,
      "x".repeat(6000),
    ].join("\n");
    const deps = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`acme/dep${i}`, "^1.0.0"]));
    const result = assess(
      {
        runtime: "runner",
        permissions: ["artifacts.read", "artifacts.write", "llm", "logging", "runner.exec", ...hosts],
        dependencies: deps,
      },
      { "dist/a.js": code, "dist/b.js": code, "tools/c.py": "exec(base64.b64decode(s))\n" },
      8 * 1024 * 1024,
    );
    expect(result.score).toBeGreaterThan(0.99);
    expect(result.score).toBeLessThanOrEqual(1);
    for (const finding of result.findings) {
      expect(finding.weight).toBeGreaterThanOrEqual(0);
      expect(finding.weight).toBeLessThan(1);
    }
  });

  it("keeps random combinations of permissions within [0, 1] and monotone under supersets", () => {
    const pool = [
      "artifacts.read",
      "artifacts.write",
      "llm",
      "logging",
      "runner.exec",
      "network.egress:a.example.com",
      "network.egress:*.b.example.com",
      "network.egress:c.example.net",
    ];
    for (let trial = 0; trial < 50; trial++) {
      const subset = pool.filter(() => Math.random() < 0.5);
      const extra = pool.filter((p) => !subset.includes(p));
      const smaller = assess({ permissions: subset }).score;
      const larger = assess({ permissions: [...subset, ...extra.slice(0, 1)] }).score;
      expect(smaller).toBeGreaterThanOrEqual(0);
      expect(larger).toBeLessThanOrEqual(1);
      expect(larger).toBeGreaterThanOrEqual(smaller);
    }
  });
});
