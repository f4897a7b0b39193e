import type { CapsuleManifest } from "./manifest";

export type Severity = "info" | "low" | "medium" | "high";

export interface RiskFinding {
  id: string;
  severity: Severity;
  /** This finding's contribution: the score combines weights as independent risks, 1 - Π(1 - w). */
  weight: number;
  message: string;
  file?: string;
  line?: number;
}

export interface RiskAssessment {
  score: number;
  findings: RiskFinding[];
}

/** Below this score a submission is approved without a human. */
export const AUTO_APPROVE_BELOW = 0.3;

const PERMISSION_WEIGHTS: Record<string, { weight: number; severity: Severity; why: string }> = {
  "artifacts.read": { weight: 0.02, severity: "info", why: "reads project artefacts" },
  "artifacts.write": { weight: 0.05, severity: "low", why: "writes project artefacts" },
  logging: { weight: 0, severity: "info", why: "writes to the run log" },
  llm: { weight: 0.1, severity: "low", why: "calls a language model, spending tokens" },
  "runner.exec": { weight: 0.25, severity: "medium", why: "runs shell commands on a runner" },
};

const CODE_FILE = /\.(m?js|cjs|ts|py|sh|bash)$/;

const CODE_PATTERNS: { id: string; pattern: RegExp; weight: number; severity: Severity; message: string }[] =
  [
    {
      id: "dynamic-code-eval",
      pattern: /\beval\s*\(/,
      weight: 0.35,
      severity: "high",
      message: "evaluates code built at run time (eval)",
    },
    {
      id: "dynamic-code-function",
      pattern: /\bnew\s+Function\s*\(|\bFunction\s*\(\s*["'`]/,
      weight: 0.35,
      severity: "high",
      message: "builds functions from strings (new Function)",
    },
    {
      id: "dynamic-import",
      pattern: /\bimport\s*\(\s*[^"'`\s)]/,
      weight: 0.15,
      severity: "medium",
      message: "imports a module whose name is computed at run time",
    },
    {
      id: "process-spawn",
      pattern: /\bchild_process\b|\bsubprocess\.|\bos\.system\s*\(|\bexecSync\s*\(/,
      weight: 0.2,
      severity: "medium",
      message: "starts other processes",
    },
    {
      id: "python-exec",
      pattern: /\bexec\s*\(\s*(?:compile|base64|bytes|open)/,
      weight: 0.35,
      severity: "high",
      message: "executes code built at run time (exec)",
    },
    {
      id: "encoded-blob",
      pattern: /["'`][A-Za-z0-9+/=]{2000,}["'`]/,
      weight: 0.15,
      severity: "medium",
      message: "embeds a large encoded blob (possible obfuscation)",
    },
  ];

/**
 * Scores what a capsule asks for and contains. Each finding explains its part; weights combine as
 * independent risks so the score stays within [0, 1] and no extra capability ever lowers it.
 */
export function assessRisk(
  manifest: CapsuleManifest,
  contents: ReadonlyMap<string, Uint8Array>,
  bundleSize: number,
): RiskAssessment {
  const findings: RiskFinding[] = [];

  for (const permission of manifest.spec.permissions) {
    const known = PERMISSION_WEIGHTS[permission];
    if (known) {
      findings.push({
        id: `permission:${permission}`,
        severity: known.severity,
        weight: known.weight,
        message: `Asks for ${permission}: ${known.why}`,
      });
    } else if (permission.startsWith("network.egress:")) {
      const host = permission.slice("network.egress:".length);
      const wildcard = host.startsWith("*.");
      findings.push({
        id: `egress:${host}`,
        severity: wildcard ? "high" : "medium",
        weight: wildcard ? 0.25 : 0.15,
        message: wildcard
          ? `Sends network requests to any subdomain of ${host.slice(2)}`
          : `Sends network requests to ${host}`,
      });
    }
  }

  if (manifest.spec.runtime === "runner") {
    findings.push({
      id: "runtime:runner",
      severity: "medium",
      weight: 0.1,
      message: "Runs outside the Worker sandbox on an external runner",
    });
  }

  const dependencyCount = Object.keys(manifest.spec.dependencies).length;
  if (dependencyCount > 0) {
    findings.push({
      id: "dependencies",
      severity: dependencyCount > 5 ? "medium" : "low",
      weight: Math.min(0.1, 0.02 * dependencyCount),
      message: `Depends on ${dependencyCount} other capsule${dependencyCount === 1 ? "" : "s"}`,
    });
  }

  if (bundleSize > 1024 * 1024) {
    findings.push({
      id: "bundle-size",
      severity: "low",
      weight: bundleSize > 4 * 1024 * 1024 ? 0.1 : 0.05,
      message: `The bundle is large (${(bundleSize / 1024 / 1024).toFixed(1)} MiB compressed)`,
    });
  }

  const decoder = new TextDecoder();
  const declaresEgress = manifest.spec.permissions.some((p) => p.startsWith("network.egress:"));
  for (const [path, data] of contents) {
    if (!CODE_FILE.test(path)) continue;
    const lines = decoder.decode(data).split("\n");
    const reported = new Set<string>();
    lines.forEach((line, index) => {
      for (const rule of CODE_PATTERNS) {
        if (reported.has(rule.id) || !rule.pattern.test(line)) continue;
        reported.add(rule.id);
        findings.push({
          id: rule.id,
          severity: rule.severity,
          weight: rule.weight,
          message: `Code ${rule.message}`,
          file: path,
          line: index + 1,
        });
      }
      if (!declaresEgress && !reported.has("undeclared-network") && /\bfetch\s*\(/.test(line)) {
        reported.add("undeclared-network");
        findings.push({
          id: "undeclared-network",
          severity: "low",
          weight: 0.1,
          message:
            "Code calls fetch but the manifest declares no network.egress host (it will fail at run time)",
          file: path,
          line: index + 1,
        });
      }
      if (!reported.has("minified") && line.length > 5000) {
        reported.add("minified");
        findings.push({
          id: "minified",
          severity: "low",
          weight: 0.05,
          message: "Contains very long lines (minified or generated code is hard to review)",
          file: path,
          line: index + 1,
        });
      }
    });
  }

  const safe = findings.reduce((p, f) => p * (1 - f.weight), 1);
  return { score: Math.round((1 - safe) * 1000) / 1000, findings };
}
