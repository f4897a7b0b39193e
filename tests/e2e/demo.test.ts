import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

const root = resolve(import.meta.dirname, "../..");
const baseUrl = (inject("baseUrl") || process.env.SOMA_E2E_URL || "").replace(/\/+$/, "");

interface Report {
  project: { id: string; status: string };
  totals: { tasks: number; completed: number; durationSeconds: number };
  tasks: { id: string; capsule: string; runtime: string; status: string; score: number | null }[];
  timeline: { type: string; taskId: string | null; at: string }[];
  artifacts: { path: string }[];
}

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "soma-demo-test-"));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** `npm run demo` as a user runs it, against the platform under test, with a fresh demo account. */
function runDemo(out: string): Promise<{ code: number | null; output: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, SOMA_URL: baseUrl };
  delete env.SOMA_TOKEN;
  return new Promise((done, failed) => {
    const child = spawn("npm", ["run", "--silent", "demo", "--", "--out", out, "--timeout", "240"], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
    });
    child.once("error", failed);
    child.once("close", (code) => done({ code, output }));
  });
}

function python(args: string[], cwd: string) {
  return spawnSync("python3", args, {
    cwd,
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1" },
  });
}

describe("npm run demo: the Python calculator, planned, generated, tested and gated without a human", () => {
  let demo: { code: number | null; output: string };
  let report: Report;
  let apiKey: string;
  const out = () => join(scratch, "out");

  beforeAll(async () => {
    demo = await runDemo(out());
    report = JSON.parse(await readFile(join(out(), "report.json"), "utf8")) as Report;
    apiKey = (JSON.parse(await readFile(join(out(), "account.json"), "utf8")) as { apiKey: string }).apiKey;
  }, 300_000);

  it("completes the project and says where the report and artefacts are", () => {
    expect(demo.code, demo.output).toBe(0);
    expect(report.project.status).toBe("completed");
    const id = report.project.id;
    expect(demo.output).toContain(`${baseUrl}/v1/projects/${id}/report`);
    expect(demo.output).toContain(`${baseUrl}/v1/projects/${id}/artifacts.tar.gz`);
    expect(demo.output).toContain("Demo passed");
  });

  it("plans one task per operation, runs them in parallel, runs the tests on a runner and gates every output", () => {
    const ids = report.tasks.map((t) => t.id);
    expect(ids).toEqual(
      expect.arrayContaining([
        "plan",
        "package",
        "op-add",
        "op-sub",
        "op-mul",
        "op-div",
        "op-pow",
        "tests",
        "readme",
        "run-tests",
      ]),
    );
    expect(report.tasks.every((t) => t.status === "completed")).toBe(true);
    for (const task of report.tasks.filter((t) => t.id !== "plan")) {
      expect(task.score, task.id).toBeGreaterThanOrEqual(0.8);
    }
    expect(report.tasks.find((t) => t.id === "run-tests")?.runtime).toBe("runner");
    // Every operation was dispatched before any of them finished: they ran side by side.
    const ops = new Set(["op-add", "op-sub", "op-mul", "op-div", "op-pow"]);
    const events = report.timeline.filter((e) => e.taskId && ops.has(e.taskId));
    const lastDispatch = events.findLastIndex((e) => e.type === "task.dispatched");
    const firstDone = events.findIndex((e) => e.type === "task.completed");
    expect(lastDispatch).toBeLessThan(firstDone);
    expect(report.artifacts.map((a) => a.path)).toEqual(
      expect.arrayContaining([
        "README.md",
        "calculator/__main__.py",
        "calculator/ops/pow.py",
        "tests/test_cli.py",
        "test-report.md",
      ]),
    );
  });

  it("produces a calculator whose own tests pass and whose command line behaves as specified", async () => {
    // Fetch and unpack the archive independently of the demo script, with the system tar.
    const res = await fetch(`${baseUrl}/v1/projects/${report.project.id}/artifacts.tar.gz`, {
      headers: { authorization: `Bearer ${apiKey}` },
    });
    expect(res.status).toBe(200);
    const dir = join(scratch, "check");
    await writeFile(join(scratch, "artifacts.tar.gz"), new Uint8Array(await res.arrayBuffer()));
    spawnSync("mkdir", ["-p", dir]);
    const untar = spawnSync("tar", ["-xzf", join(scratch, "artifacts.tar.gz"), "-C", dir], {
      encoding: "utf8",
    });
    expect(untar.status, untar.stderr).toBe(0);

    const suite = python(["-m", "unittest", "discover"], dir);
    expect(suite.status, suite.stderr).toBe(0);
    expect(suite.stderr).toMatch(/Ran \d+ tests/);

    const add = python(["-m", "calculator", "add", "2", "3"], dir);
    expect([add.status, add.stdout, add.stderr]).toEqual([0, "5\n", ""]);
    const pow = python(["-m", "calculator", "pow", "2", "10"], dir);
    expect([pow.status, pow.stdout]).toEqual([0, "1024\n"]);
    const div = python(["-m", "calculator", "div", "1", "0"], dir);
    expect(div.status).toBe(2);
    expect(div.stdout).toBe("");
    expect(div.stderr).toMatch(/division by zero/);
    const bad = python(["-m", "calculator", "mul", "x", "3"], dir);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/not a number/);

    const testReport = await readFile(join(dir, "test-report.md"), "utf8");
    expect(testReport).toMatch(/Result: \*\*passed\*\*/);
    const readme = await readFile(join(dir, "README.md"), "utf8");
    expect(readme).toMatch(/^# Calculator/);
    expect(readme).toContain("## Usage");
  });
});

describe("the demo's capsules (no server)", () => {
  interface Capsule {
    run(input: unknown, ctx?: unknown): Promise<Record<string, unknown>>;
  }
  interface PlannedTask {
    id: string;
    capsule: string;
    inputs: Record<string, unknown>;
    dependsOn: string[];
    successCriteria: string[];
  }
  const load = async (folder: string) =>
    ((await import(pathToFileURL(join(root, "capsules", folder, "main.js")).href)) as { default: Capsule })
      .default;
  const spec = async () =>
    (
      JSON.parse(await readFile(join(root, "examples/projects/python-cli-calculator.json"), "utf8")) as {
        spec: { inputs: Record<string, unknown> };
      }
    ).spec.inputs;

  it("plans the same graph from the same spec, with run-tests last, and names what is wrong in a bad spec", async () => {
    const planner = await load("python-project-planner");
    const inputs = await spec();
    const first = (await planner.run(inputs)).tasks as PlannedTask[];
    expect(await planner.run(structuredClone(inputs))).toEqual(await planner.run(inputs));
    const runTests = first.find((t) => t.id === "run-tests")!;
    expect(runTests.dependsOn.sort()).toEqual(
      first
        .filter((t) => t.id !== "run-tests")
        .map((t) => t.id)
        .sort(),
    );
    expect(first.filter((t) => t.id.startsWith("op-")).every((t) => t.dependsOn.length === 0)).toBe(true);

    const operations = inputs.operations as Record<string, unknown>[];
    await expect(
      planner.run({ ...inputs, operations: [{ ...operations[0], operator: "@" }] }),
    ).rejects.toThrow(/operations\[0\]\.operator: must be one of/);
    await expect(planner.run({ ...inputs, operations: [operations[0], operations[0]] })).rejects.toThrow(
      /the name add is used twice/,
    );
    await expect(planner.run({ ...inputs, package: "class" })).rejects.toThrow(/spec package: must be/);
  });

  it("generates files that meet every check of the quality reviewer", async () => {
    const planner = await load("python-project-planner");
    const reviewer = await load("quality-reviewer");
    const writers: Record<string, Capsule> = {
      "soma/python-codegen@^1": await load("python-codegen"),
      "soma/readme-writer@^1": await load("readme-writer"),
    };
    const written = new Map<string, string>();
    const ctx = { artifacts: { write: async (path: string, content: string) => written.set(path, content) } };
    const tasks = (await planner.run(await spec())).tasks as PlannedTask[];
    for (const task of tasks.filter((t) => t.id !== "run-tests")) {
      const output = await writers[task.capsule]!.run(task.inputs, ctx);
      const gate = (await reviewer.run({
        task: { id: task.id, successCriteria: task.successCriteria },
        output,
      })) as {
        scores: Record<string, number>;
        feedback: string;
      };
      expect(gate.feedback, task.id).toBe("Meets every check of the rubric.");
      expect(
        Object.values(gate.scores).every((score) => score === 1),
        task.id,
      ).toBe(true);
    }
    expect([...written.keys()].sort()).toEqual([
      "README.md",
      "calculator/__init__.py",
      "calculator/__main__.py",
      "calculator/errors.py",
      "calculator/numbers.py",
      "calculator/ops/__init__.py",
      "calculator/ops/add.py",
      "calculator/ops/div.py",
      "calculator/ops/mul.py",
      "calculator/ops/pow.py",
      "calculator/ops/sub.py",
      "tests/__init__.py",
      "tests/test_cli.py",
      "tests/test_operations.py",
    ]);
  });
});
