import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { stringify } from "yaml";

/** A fixed timestamp keeps bundles of equal sources byte-identical between runs. */
const EPOCH = new Date("2026-01-01T00:00:00Z");
const MAIN_JS = new TextEncoder().encode("export default { async run(input) { return input; } };\n");

/** mulberry32: a small seeded generator, so every run seeds the same catalog. */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = (random, list) => list[Math.floor(random() * list.length)];

/**
 * Per category: subjects (what a capsule works on), roles (what it is) and how a description opens. Search
 * queries in the bench use the same vocabulary, so hit counts resemble a real catalog's.
 */
const VOCABULARY = {
  Code: {
    subjects: [
      "typescript",
      "python",
      "rust",
      "golang",
      "react",
      "graphql",
      "regex",
      "api-client",
      "refactor",
      "lint",
      "monorepo",
      "java",
      "kotlin",
      "sql-query",
      "dependency",
    ],
    roles: [
      "generator",
      "refactorer",
      "formatter",
      "linter",
      "migrator",
      "scaffolder",
      "upgrader",
      "explainer",
      "fixer",
      "optimizer",
    ],
    phrases: [
      "for large codebases",
      "with type-safe output",
      "following the project's style guide",
      "across a monorepo",
      "without changing behaviour",
    ],
  },
  Data: {
    subjects: [
      "csv",
      "json",
      "parquet",
      "postgres",
      "bigquery",
      "spreadsheet",
      "etl",
      "schema",
      "dataframe",
      "sqlite",
      "clickhouse",
      "xml",
      "excel",
      "timeseries",
      "geojson",
    ],
    roles: [
      "cleaner",
      "validator",
      "converter",
      "profiler",
      "deduplicator",
      "loader",
      "joiner",
      "sampler",
      "normalizer",
      "extractor",
    ],
    phrases: [
      "trimming whitespace and normalising dates",
      "with schema inference",
      "streaming rows in batches",
      "keeping an audit trail",
      "for nightly pipelines",
    ],
  },
  Testing: {
    subjects: [
      "unit-test",
      "e2e",
      "snapshot",
      "fuzz",
      "property",
      "load-test",
      "playwright",
      "vitest",
      "jest",
      "pytest",
      "contract",
      "mutation",
      "coverage",
      "flaky-test",
      "regression",
    ],
    roles: [
      "generator",
      "runner",
      "triager",
      "reporter",
      "minimizer",
      "planner",
      "writer",
      "analyzer",
      "detector",
      "harness",
    ],
    phrases: [
      "from user stories",
      "with readable failure reports",
      "for pull requests",
      "that flags flaky cases",
      "with coverage deltas",
    ],
  },
  Documentation: {
    subjects: [
      "readme",
      "changelog",
      "api-docs",
      "docstring",
      "openapi",
      "tutorial",
      "release-notes",
      "adr",
      "markdown",
      "glossary",
      "runbook",
      "wiki",
      "jsdoc",
      "diagram",
      "faq",
    ],
    roles: [
      "writer",
      "generator",
      "updater",
      "linter",
      "translator",
      "summarizer",
      "checker",
      "publisher",
      "indexer",
      "reviewer",
    ],
    phrases: [
      "from commit history",
      "kept in sync with the code",
      "in plain English",
      "with runnable examples",
      "for new contributors",
    ],
  },
  DevOps: {
    subjects: [
      "kubernetes",
      "terraform",
      "docker",
      "helm",
      "github-actions",
      "ci-pipeline",
      "ansible",
      "nginx",
      "prometheus",
      "grafana",
      "cloudflare",
      "aws-lambda",
      "deploy",
      "rollback",
      "canary",
    ],
    roles: [
      "deployer",
      "validator",
      "generator",
      "auditor",
      "optimizer",
      "migrator",
      "monitor",
      "planner",
      "linter",
      "doctor",
    ],
    phrases: [
      "with zero-downtime rollouts",
      "that explains every change",
      "for staging and production",
      "with cost estimates",
      "and drift detection",
    ],
  },
  Security: {
    subjects: [
      "secret",
      "dependency",
      "sast",
      "cve",
      "vulnerability",
      "license",
      "sbom",
      "iam-policy",
      "container-image",
      "csp",
      "oauth",
      "jwt",
      "tls",
      "supply-chain",
      "pentest",
    ],
    roles: [
      "scanner",
      "auditor",
      "checker",
      "reporter",
      "hardener",
      "triager",
      "monitor",
      "validator",
      "detector",
      "fixer",
    ],
    phrases: [
      "with severity ranking",
      "mapped to OWASP categories",
      "before every release",
      "with suggested fixes",
      "for compliance reports",
    ],
  },
  Research: {
    subjects: [
      "paper",
      "arxiv",
      "literature",
      "market",
      "competitor",
      "survey",
      "patent",
      "citation",
      "dataset",
      "benchmark",
      "trend",
      "interview",
      "source",
      "fact",
      "statistics",
    ],
    roles: [
      "summarizer",
      "finder",
      "analyzer",
      "collector",
      "comparer",
      "extractor",
      "reviewer",
      "tracker",
      "digest",
      "explorer",
    ],
    phrases: [
      "with cited sources",
      "into a one-page brief",
      "ranked by relevance",
      "with key findings first",
      "for product teams",
    ],
  },
  Writing: {
    subjects: [
      "blog-post",
      "email",
      "newsletter",
      "tweet",
      "landing-page",
      "proposal",
      "cover-letter",
      "press-release",
      "story",
      "headline",
      "copy",
      "translation",
      "grammar",
      "tone",
      "outline",
    ],
    roles: [
      "writer",
      "editor",
      "rewriter",
      "proofreader",
      "generator",
      "summarizer",
      "translator",
      "polisher",
      "drafter",
      "shortener",
    ],
    phrases: [
      "in your brand voice",
      "with a clear call to action",
      "for technical audiences",
      "in three lengths",
      "without jargon",
    ],
  },
  Planning: {
    subjects: [
      "sprint",
      "roadmap",
      "milestone",
      "task",
      "estimate",
      "backlog",
      "okr",
      "meeting",
      "standup",
      "retrospective",
      "project",
      "timeline",
      "risk",
      "dependency-graph",
      "capacity",
    ],
    roles: [
      "planner",
      "breakdown",
      "estimator",
      "prioritizer",
      "scheduler",
      "tracker",
      "organizer",
      "facilitator",
      "forecaster",
      "assistant",
    ],
    phrases: [
      "from a product brief",
      "with token budgets per step",
      "balanced across the team",
      "with critical path highlighted",
      "updated every day",
    ],
  },
  Review: {
    subjects: [
      "pull-request",
      "code",
      "design",
      "architecture",
      "accessibility",
      "performance",
      "sql",
      "api",
      "ux",
      "commit-message",
      "diff",
      "security",
      "style",
      "test",
      "copy",
    ],
    roles: [
      "reviewer",
      "checker",
      "critic",
      "auditor",
      "commenter",
      "grader",
      "inspector",
      "advisor",
      "gatekeeper",
      "assistant",
    ],
    phrases: [
      "with inline suggestions",
      "scored against a rubric",
      "that catches regressions",
      "before merge",
      "with a summary for humans",
    ],
  },
  Other: {
    subjects: [
      "calendar",
      "invoice",
      "recipe",
      "slack",
      "discord",
      "notion",
      "jira",
      "trello",
      "zapier",
      "webhook",
      "rss",
      "podcast",
      "image",
      "pdf",
      "qr-code",
    ],
    roles: [
      "bot",
      "helper",
      "converter",
      "summarizer",
      "organizer",
      "notifier",
      "extractor",
      "sync",
      "generator",
      "assistant",
    ],
    phrases: [
      "for small teams",
      "with daily digests",
      "that runs on a schedule",
      "with one-click setup",
      "for personal use",
    ],
  },
};

export const CATEGORIES = Object.keys(VOCABULARY);

const ROLE_VERBS = {
  generator: "Generates",
  refactorer: "Refactors",
  formatter: "Formats",
  linter: "Lints",
  migrator: "Migrates",
  scaffolder: "Scaffolds",
  upgrader: "Upgrades",
  explainer: "Explains",
  fixer: "Fixes",
  optimizer: "Optimizes",
  cleaner: "Cleans",
  validator: "Validates",
  converter: "Converts",
  profiler: "Profiles",
  deduplicator: "Deduplicates",
  loader: "Loads",
  joiner: "Joins",
  sampler: "Samples",
  normalizer: "Normalizes",
  extractor: "Extracts",
  runner: "Runs",
  triager: "Triages",
  reporter: "Reports on",
  minimizer: "Minimizes",
  planner: "Plans",
  writer: "Writes",
  analyzer: "Analyzes",
  detector: "Detects problems in",
  harness: "Drives",
  updater: "Updates",
  translator: "Translates",
  summarizer: "Summarizes",
  checker: "Checks",
  publisher: "Publishes",
  indexer: "Indexes",
  reviewer: "Reviews",
  deployer: "Deploys",
  auditor: "Audits",
  monitor: "Monitors",
  doctor: "Diagnoses",
  scanner: "Scans",
  hardener: "Hardens",
  finder: "Finds",
  collector: "Collects",
  comparer: "Compares",
  tracker: "Tracks",
  digest: "Digests",
  explorer: "Explores",
  editor: "Edits",
  rewriter: "Rewrites",
  proofreader: "Proofreads",
  polisher: "Polishes",
  drafter: "Drafts",
  shortener: "Shortens",
  breakdown: "Breaks down",
  estimator: "Estimates",
  prioritizer: "Prioritizes",
  scheduler: "Schedules",
  organizer: "Organizes",
  facilitator: "Facilitates",
  forecaster: "Forecasts",
  assistant: "Assists with",
  critic: "Critiques",
  commenter: "Comments on",
  grader: "Grades",
  inspector: "Inspects",
  advisor: "Advises on",
  gatekeeper: "Gates",
  bot: "Automates",
  helper: "Helps with",
  notifier: "Sends alerts about",
  sync: "Syncs",
};

const ORG_FIRST = [
  "acme",
  "northwind",
  "globex",
  "initech",
  "umbrella",
  "stark",
  "wayne",
  "hooli",
  "pied",
  "vandelay",
  "tyrell",
  "cyberdyne",
  "soylent",
  "wonka",
  "oscorp",
  "aperture",
  "blackmesa",
  "contoso",
  "fabrikam",
  "tailspin",
  "litware",
  "adatum",
  "wingtip",
  "proseware",
  "lucerne",
  "margie",
  "fourth",
  "coho",
  "alpine",
  "bluesky",
  "redwood",
  "granite",
  "harbor",
  "summit",
  "cedar",
  "quartz",
  "nimbus",
  "orbit",
  "pixel",
  "vector",
];
const ORG_SECOND = [
  "labs",
  "ai",
  "dev",
  "data",
  "ops",
  "tools",
  "works",
  "cloud",
  "systems",
  "studio",
  "io",
  "hq",
  "research",
  "security",
  "agents",
  "forge",
  "collective",
  "digital",
  "tech",
  "team",
];

/** Account handles, unique, 2-39 chars of [a-z0-9-]. */
export function makeHandles(count, random) {
  const handles = new Set();
  for (let attempt = 0; handles.size < count && attempt < count * 20; attempt++) {
    const base = `${pick(random, ORG_FIRST)}-${pick(random, ORG_SECOND)}`;
    handles.add(handles.has(base) ? `${base}-${handles.size}` : base);
  }
  if (handles.size < count) throw new Error(`could only make ${handles.size} of ${count} handles`);
  return [...handles];
}

function tagsFor(random, category, subject, role) {
  const vocabulary = VOCABULARY[category];
  const tags = new Set([subject.slice(0, 32), role]);
  while (tags.size < 2 + Math.floor(random() * 3)) tags.add(pick(random, vocabulary.subjects).slice(0, 32));
  tags.add(category.toLowerCase());
  return [...tags];
}

/**
 * Listing metadata of `count` catalog capsules spread over the handles (no more than `perHandle` each), with
 * names unique per handle.
 */
export function makeCatalog(handles, count, perHandle, random) {
  if (handles.length * perHandle < count) throw new Error("not enough handles for the catalog");
  const out = [];
  const used = new Map(handles.map((h) => [h, new Set()]));
  for (let i = 0; i < count; i++) {
    const handle = handles[i % handles.length];
    const category = CATEGORIES[Math.floor(random() * CATEGORIES.length)];
    const vocabulary = VOCABULARY[category];
    let subject = pick(random, vocabulary.subjects);
    let role = pick(random, vocabulary.roles);
    let short = `${subject}-${role}`;
    for (let attempt = 0; used.get(handle).has(short) && attempt < 50; attempt++) {
      subject = pick(random, vocabulary.subjects);
      role = pick(random, vocabulary.roles);
      short = `${subject}-${role}`;
    }
    if (used.get(handle).has(short)) short = `${short}-${i}`;
    used.get(handle).add(short);
    const label = subject.replaceAll("-", " ");
    out.push({
      name: `${handle}/${short}`,
      version: "1.0.0",
      category,
      tags: tagsFor(random, category, subject, role),
      description: `${ROLE_VERBS[role] ?? "Handles"} ${label} ${pick(random, vocabulary.phrases)}.`,
      permissions:
        random() < 0.5 ? ["artifacts.read"] : random() < 0.6 ? ["artifacts.read", "logging"] : ["llm"],
      pricing:
        random() < 0.85 ? { model: "free", amountUsd: 0 } : { model: "per_execution", amountUsd: 0.01 },
      dependencies: {},
    });
  }
  return out;
}

/** Sizes of the levels of the install tree: the root, then four levels below it (40 capsules). */
export const TREE_LEVELS = [1, 3, 6, 12, 18];
const TREE_RANGES = ["^1.0.0", "^1.0.0", "~1.2.0", ">=1.0.0 <2.0.0", "1.x"];
/** Shared leaves published as 1.0.0, 1.2.0 and 2.0.0, so the resolver must pick 1.2.0 among three. */
const MULTI_VERSION_LEAVES = new Set([12, 13, 14, 15, 16, 17]);

/**
 * A 4-level dependency tree of 40 capsules with shared dependencies, spread over the given handles. Returns
 * the publishes in a valid order (every dependency before its dependents) and the names by level.
 */
export function makeTree(handles, random) {
  const levels = TREE_LEVELS.map((size, level) =>
    Array.from({ length: size }, (_, i) => {
      const handle = handles[(level * 7 + i) % handles.length];
      const category = pick(random, ["Code", "DevOps", "Testing", "Data"]);
      const vocabulary = VOCABULARY[category];
      const subject = pick(random, vocabulary.subjects);
      const role = pick(random, vocabulary.roles);
      return {
        name: `${handle}/${subject}-${role}-l${level}n${i}`,
        category,
        tags: tagsFor(random, category, subject, role),
        description: `${ROLE_VERBS[role] ?? "Handles"} ${subject.replaceAll("-", " ")} ${pick(random, vocabulary.phrases)}.`,
      };
    }),
  );
  const childrenOf = (level, j) => {
    const below = levels[level + 1];
    if (level === 0) return below.map((_, i) => i);
    if (level < 3) return [2 * j, 2 * j + 1, (2 * j + 2) % below.length];
    return [j, 12 + (j % 6), (j + 1) % 12];
  };
  const publishes = [];
  for (let level = levels.length - 1; level >= 0; level--) {
    levels[level].forEach((node, j) => {
      const dependencies = {};
      if (level < levels.length - 1) {
        for (const child of childrenOf(level, j)) {
          dependencies[levels[level + 1][child].name] = TREE_RANGES[(j + child) % TREE_RANGES.length];
        }
      }
      const versions = level === 4 && MULTI_VERSION_LEAVES.has(j) ? ["1.0.0", "1.2.0", "2.0.0"] : ["1.2.0"];
      for (const [round, version] of versions.entries()) {
        publishes.push({
          ...node,
          level,
          round,
          version,
          permissions: ["artifacts.read"],
          pricing: { model: "free", amountUsd: 0 },
          dependencies,
        });
      }
    });
  }
  return { publishes, levels: levels.map((l) => l.map((n) => n.name)) };
}

/** The capsule.yaml of one capsule. */
export function manifestYaml(capsule) {
  return stringify({
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: {
      name: capsule.name,
      version: capsule.version,
      category: capsule.category,
      tags: capsule.tags,
      license: "MIT",
    },
    spec: {
      description: capsule.description,
      runtime: "worker",
      entrypoint: "dist/main.js",
      permissions: capsule.permissions,
      dependencies: capsule.dependencies,
      tokenEstimate: { planning: 0, execution: 100 },
      inputs: { type: "object" },
      outputs: { type: "object" },
      pricing: capsule.pricing,
    },
  });
}

/** The .tar.gz a publisher uploads: capsule.yaml and dist/main.js. */
export async function packBundle(capsule) {
  const manifest = new TextEncoder().encode(manifestYaml(capsule));
  const entry = (name, body) => ({
    header: { name, size: body.length, type: "file", mode: 0o644, mtime: EPOCH },
    body,
  });
  const tar = await packTar([entry("capsule.yaml", manifest), entry("dist/main.js", MAIN_JS)]);
  return gzipSync(tar, { level: 6, mtime: EPOCH });
}
