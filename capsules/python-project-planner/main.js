// Plans a Python command-line project of binary numeric operations as a KAMACHIQ task graph. Deterministic:
// the same spec always gives the same graph, so a re-planned project does the same work.

const DEFAULT_CAPSULES = {
  codegen: "soma/python-codegen@^1",
  readme: "soma/readme-writer@^1",
  tests: "soma/python-test-runner@^1",
};

const OPERATORS = new Set(["+", "-", "*", "/", "//", "%", "**"]);
const GUARDS = new Set([
  "zero-divisor",
  "zero-to-negative-power",
  "negative-base-fractional-exponent",
  "result-too-large",
]);
const PYTHON_KEYWORDS = new Set(
  (
    "False None True and as assert async await break class continue def del elif else except finally for " +
    "from global if import in is lambda nonlocal not or pass raise return try while with yield"
  ).split(" "),
);
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,39}$/;
const NUMBER = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
/** Text that ends up inside Python string literals and docstrings: one line, no quotes or backslashes. */
const PLAIN_TEXT = /^[^"\\\n\r\t`]{1,200}$/;
const CAPSULE_REF = /^[a-z0-9-]+\/[a-z0-9][a-z0-9._-]*@\S+$/;

class SpecError extends TypeError {
  constructor(path, message) {
    super(`spec ${path}: ${message}`);
    this.name = "SpecError";
  }
}

function identifier(value, path) {
  if (typeof value !== "string" || !IDENTIFIER.test(value) || PYTHON_KEYWORDS.has(value)) {
    throw new SpecError(
      path,
      `must be a lowercase Python identifier that is not a keyword, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function text(value, path, fallback) {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== "string" || !PLAIN_TEXT.test(value)) {
    throw new SpecError(path, 'must be one line of 1-200 characters without ", \\, ` or tabs');
  }
  return value;
}

function number(value, path) {
  if (typeof value !== "string" || !NUMBER.test(value)) {
    throw new SpecError(
      path,
      `must be a number written as a string (such as "2" or "-1.5"), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function list(value, path, max) {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > max)
    throw new SpecError(path, `must be a list of at most ${max} items`);
  return value;
}

/** Checks one operation and returns it with its defaults filled in. */
function operation(op, index) {
  const at = `operations[${index}]`;
  if (op === null || typeof op !== "object") throw new SpecError(at, "must be an object");
  const name = identifier(op.name, `${at}.name`);
  if (!OPERATORS.has(op.operator)) {
    throw new SpecError(`${at}.operator`, `must be one of ${[...OPERATORS].join(" ")}`);
  }
  const examples = list(op.examples, `${at}.examples`, 20).map((example, i) => ({
    a: number(example?.a, `${at}.examples[${i}].a`),
    b: number(example?.b, `${at}.examples[${i}].b`),
    result: number(example?.result, `${at}.examples[${i}].result`),
  }));
  if (examples.length === 0) throw new SpecError(`${at}.examples`, "needs at least one example");
  const errors = list(op.errors, `${at}.errors`, 10).map((error, i) => {
    if (!GUARDS.has(error?.when)) {
      throw new SpecError(`${at}.errors[${i}].when`, `must be one of ${[...GUARDS].join(", ")}`);
    }
    return {
      when: error.when,
      message: text(error.message, `${at}.errors[${i}].message`),
      ...(error.example
        ? {
            example: {
              a: number(error.example.a, `${at}.errors[${i}].example.a`),
              b: number(error.example.b, `${at}.errors[${i}].example.b`),
            },
          }
        : {}),
    };
  });
  return {
    name,
    function: identifier(op.function ?? name, `${at}.function`),
    operator: op.operator,
    summary: text(op.summary, `${at}.summary`),
    examples,
    errors,
  };
}

/** Validates the project spec and fills in defaults. */
export function readSpec(input) {
  if (input === null || typeof input !== "object") throw new SpecError("inputs", "must be an object");
  const operations = list(input.operations, "operations", 20).map(operation);
  if (operations.length === 0) throw new SpecError("operations", "needs at least one operation");
  const names = new Set();
  const functions = new Set();
  for (const op of operations) {
    if (names.has(op.name)) throw new SpecError("operations", `the name ${op.name} is used twice`);
    if (functions.has(op.function))
      throw new SpecError("operations", `the function ${op.function} is used twice`);
    names.add(op.name);
    functions.add(op.function);
  }
  const exitCode = input.errorExitCode ?? 2;
  if (!Number.isInteger(exitCode) || exitCode < 1 || exitCode > 125) {
    throw new SpecError("errorExitCode", "must be an integer from 1 to 125");
  }
  const capsules = { ...DEFAULT_CAPSULES, ...(input.capsules ?? {}) };
  for (const [role, ref] of Object.entries(capsules)) {
    if (!(role in DEFAULT_CAPSULES))
      throw new SpecError(`capsules.${role}`, "is not a capsule role of this planner");
    if (typeof ref !== "string" || !CAPSULE_REF.test(ref)) {
      throw new SpecError(`capsules.${role}`, "must be a capsule reference such as soma/python-codegen@^1");
    }
  }
  const pkg = identifier(input.package, "package");
  return {
    package: pkg,
    title: text(input.title, "title", pkg),
    description: text(input.description, "description"),
    pythonVersion: text(input.pythonVersion, "pythonVersion", "3.8"),
    errorExitCode: exitCode,
    operations,
    capsules,
  };
}

/** The README's content, as the readme writer takes it. */
function readmeInputs(spec) {
  const command = `python3 -m ${spec.package}`;
  const examples = spec.operations.map((op) => ({
    command: `${command} ${op.name} ${op.examples[0].a} ${op.examples[0].b}`,
    output: op.examples[0].result,
  }));
  const failures = spec.operations.flatMap((op) =>
    op.errors
      .filter((error) => error.example)
      .map((error) => ({
        command: `${command} ${op.name} ${error.example.a} ${error.example.b}`,
        stderr: `error: ${error.message}`,
        exitCode: spec.errorExitCode,
      })),
  );
  const first = spec.operations[0];
  failures.push({
    command: `${command} ${first.name} two ${first.examples[0].b}`,
    stderr: "error: not a number: 'two'",
    exitCode: spec.errorExitCode,
  });
  return {
    path: "README.md",
    title: spec.title,
    description: spec.description,
    requirements: [`Python ${spec.pythonVersion} or newer; no third-party packages.`],
    usage: {
      synopsis: `${command} <operation> <a> <b>`,
      text: `Give an operation and two numbers; the result is printed on standard output. Numbers are integers or decimals (such as -1.5 or 2e3); integral results print without a decimal point. \`${command} --help\` lists the operations.`,
      examples,
    },
    reference: {
      heading: "Operations",
      columns: ["operation", "computes", "description"],
      rows: spec.operations.map((op) => [`\`${op.name}\``, `\`a ${op.operator} b\``, op.summary]),
    },
    sections: [
      {
        heading: "Errors",
        paragraphs: [
          `A bad number, an unknown operation, a wrong number of arguments or an impossible calculation (such as a division by zero) prints a message on standard error and exits with code ${spec.errorExitCode}; nothing is printed on standard output.`,
        ],
        transcript: failures,
      },
      {
        heading: "Tests",
        paragraphs: [
          "The unit tests call each operation and run the command line in a subprocess; run them from the project root:",
        ],
        code: { language: "sh", text: "python3 -m unittest discover -v" },
      },
      {
        heading: "Layout",
        paragraphs: [
          `\`${spec.package}/__main__.py\` is the command line, \`${spec.package}/numbers.py\` parses arguments and formats results, \`${spec.package}/ops/\` holds one module per operation and \`tests/\` the unit tests.`,
        ],
      },
    ],
  };
}

/** Runs of the finished command line the test runner checks besides the unit tests. */
function smokeChecks(spec) {
  const checks = [];
  for (const op of spec.operations) {
    const example = op.examples[0];
    checks.push({ args: [op.name, example.a, example.b], exitCode: 0, stdout: example.result });
    for (const error of op.errors) {
      if (!error.example) continue;
      checks.push({
        args: [op.name, error.example.a, error.example.b],
        exitCode: spec.errorExitCode,
        stderrContains: error.message,
      });
    }
  }
  const first = spec.operations[0];
  checks.push({
    args: [first.name, "two", first.examples[0].b],
    exitCode: spec.errorExitCode,
    stderrContains: "not a number",
  });
  return checks;
}

/**
 * The graph: the package skeleton, one task per operation, the unit tests and the README all run in
 * parallel (each is generated from the spec alone); the test run on a runner waits for all of them.
 */
export function plan(spec) {
  const pkg = spec.package;
  const shared = {
    package: pkg,
    title: spec.title,
    description: spec.description,
    errorExitCode: spec.errorExitCode,
  };
  const operations = spec.operations;
  const tasks = [
    {
      id: "package",
      capsule: spec.capsules.codegen,
      inputs: { kind: "cli-package", ...shared, operations: operations.map(({ examples, ...op }) => op) },
      dependsOn: [],
      successCriteria: [
        `file:${pkg}/__main__.py`,
        `file:${pkg}/numbers.py`,
        `file:${pkg}/ops/__init__.py`,
        "contains:def main(",
      ],
    },
    ...operations.map((op) => ({
      id: `op-${op.name.replaceAll("_", "-")}`,
      capsule: spec.capsules.codegen,
      inputs: { kind: "operation", package: pkg, operation: op },
      dependsOn: [],
      successCriteria: [`file:${pkg}/ops/${op.name}.py`, `contains:def ${op.function}(`],
    })),
    {
      id: "tests",
      capsule: spec.capsules.codegen,
      inputs: { kind: "tests", ...shared, operations },
      dependsOn: [],
      successCriteria: [
        "file:tests/test_operations.py",
        "file:tests/test_cli.py",
        "contains:import unittest",
      ],
    },
    {
      id: "readme",
      capsule: spec.capsules.readme,
      inputs: readmeInputs(spec),
      dependsOn: [],
      successCriteria: ["file:README.md", "contains:## Usage"],
    },
  ];
  tasks.push({
    id: "run-tests",
    capsule: spec.capsules.tests,
    inputs: {
      package: pkg,
      command: ["-m", "unittest", "discover", "-v"],
      smoke: smokeChecks(spec),
      report: "test-report.md",
    },
    dependsOn: tasks.map((t) => t.id),
    successCriteria: ["tests:pass", "file:test-report.md"],
  });
  return tasks;
}

export default {
  async run(input) {
    const spec = readSpec(input);
    return {
      tasks: plan(spec),
      summary: `${spec.package}: ${spec.operations.length} operations, ${spec.operations.length + 4} tasks`,
    };
  },
};
