// Generates Python source from structured specs with fixed templates: no model, no randomness, so the same
// inputs always give byte-identical files. Every file is written as a project artefact and returned in
// `files` for the quality gate. Generated code follows PEP 8: 4-space indents, docstrings on every module
// and function, lines of at most 99 characters, a trailing newline.

const MAX_LINE = 99;
const OPERATORS = new Set(["+", "-", "*", "/", "//", "%", "**"]);
const PYTHON_KEYWORDS = new Set(
  (
    "False None True and as assert async await break class continue def del elif else except finally for " +
    "from global if import in is lambda nonlocal not or pass raise return try while with yield"
  ).split(" "),
);
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,39}$/;
const NUMBER = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const PLAIN_TEXT = /^[^"\\\n\r\t`]{1,200}$/;

/** Guards an operation may declare, as the Python condition that triggers each. */
const GUARD_CONDITIONS = {
  "zero-divisor": "b == 0",
  "zero-to-negative-power": "a == 0 and b < 0",
  "negative-base-fractional-exponent": "a < 0 and b != int(b)",
};

function fail(path, message) {
  throw new TypeError(`input ${path}: ${message}`);
}

function identifier(value, path) {
  if (typeof value !== "string" || !IDENTIFIER.test(value) || PYTHON_KEYWORDS.has(value)) {
    fail(path, `must be a lowercase Python identifier that is not a keyword, got ${JSON.stringify(value)}`);
  }
  return value;
}

function plain(value, path) {
  if (typeof value !== "string" || !PLAIN_TEXT.test(value)) {
    fail(path, 'must be one line of 1-200 characters without ", \\, ` or tabs');
  }
  return value;
}

function numberLiteral(value, path) {
  if (typeof value !== "string" || !NUMBER.test(value)) fail(path, `must be a number written as a string`);
  return value;
}

/** A Python string literal; the text was checked to hold no quote or backslash. */
function str(text) {
  return `"${text}"`;
}

/** "Add b to a." -> "add b to a.", for use after a colon. */
function lowerFirst(text) {
  return text[0].toLowerCase() + text.slice(1);
}

/** Words of `text` in lines of at most `width` characters. */
function wrap(text, width) {
  const lines = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(line);
  return lines;
}

/**
 * A docstring at `indent` spaces: one line when it fits, else the summary (wrapped if need be), a blank
 * line and the body paragraphs, wrapped.
 */
function docstring(summary, body, indent) {
  const pad = " ".repeat(indent);
  const one = `${pad}"""${summary}"""`;
  if (!body && one.length <= MAX_LINE) return one;
  const [head, ...rest] = wrap(summary, MAX_LINE - indent - 3);
  const lines = [`${pad}"""${head}`, ...rest.map((l) => `${pad}${l}`)];
  for (const paragraph of body ? [].concat(body) : []) {
    lines.push("", ...wrap(paragraph, MAX_LINE - indent).map((l) => `${pad}${l}`));
  }
  lines.push(`${pad}"""`);
  return lines.join("\n");
}

/** Joins blocks of lines into a file: no trailing whitespace, one newline at the end. */
function file(...blocks) {
  const text = blocks
    .filter((b) => b !== null && b !== undefined)
    .join("\n")
    .split("\n")
    .map((line) => line.replace(/\s+$/, ""))
    .join("\n");
  for (const [n, line] of text.split("\n").entries()) {
    if (line.length > MAX_LINE)
      throw new Error(`generated line ${n + 1} is longer than ${MAX_LINE} characters`);
  }
  return `${text.replace(/\n+$/, "")}\n`;
}

function readOperation(op, path) {
  if (op === null || typeof op !== "object") fail(path, "must be an object");
  const name = identifier(op.name, `${path}.name`);
  if (!OPERATORS.has(op.operator)) fail(`${path}.operator`, `must be one of ${[...OPERATORS].join(" ")}`);
  const errors = (Array.isArray(op.errors) ? op.errors : []).map((error, i) => {
    if (!(error?.when in GUARD_CONDITIONS) && error?.when !== "result-too-large") {
      fail(`${path}.errors[${i}].when`, `is not a known guard: ${JSON.stringify(error?.when)}`);
    }
    return {
      when: error.when,
      message: plain(error.message, `${path}.errors[${i}].message`),
      example: error.example
        ? {
            a: numberLiteral(error.example.a, `${path}.errors[${i}].example.a`),
            b: numberLiteral(error.example.b, `${path}.errors[${i}].example.b`),
          }
        : null,
    };
  });
  return {
    name,
    function: identifier(op.function ?? name, `${path}.function`),
    operator: op.operator,
    summary: plain(op.summary, `${path}.summary`),
    examples: (Array.isArray(op.examples) ? op.examples : []).map((example, i) => ({
      a: numberLiteral(example?.a, `${path}.examples[${i}].a`),
      b: numberLiteral(example?.b, `${path}.examples[${i}].b`),
      result: numberLiteral(example?.result, `${path}.examples[${i}].result`),
    })),
    errors,
  };
}

function readCommon(input) {
  const operations = Array.isArray(input.operations)
    ? input.operations
    : fail("operations", "must be a list");
  return {
    package: identifier(input.package, "package"),
    title: input.title === undefined ? input.package : plain(input.title, "title"),
    description: plain(input.description, "description"),
    errorExitCode: Number.isInteger(input.errorExitCode) ? input.errorExitCode : 2,
    operations: operations.map((op, i) => readOperation(op, `operations[${i}]`)),
  };
}

// ---- the package skeleton -------------------------------------------------------------------------------

function packageInit(spec) {
  return file(
    docstring(
      `${spec.title}.`,
      [spec.description, `Run it as python3 -m ${spec.package} <operation> <a> <b>; see README.md.`],
      0,
    ),
    "",
    '__version__ = "1.0.0"',
  );
}

function errorsModule(spec) {
  return file(
    docstring(`Errors the ${spec.package} command line reports to the user.`, null, 0),
    "",
    "",
    "class CalculationError(ValueError):",
    docstring("An input the calculator cannot compute; the message says why.", null, 4),
  );
}

function numbersModule(spec) {
  return file(
    docstring("Parsing command-line numbers and formatting results.", null, 0),
    "",
    "import math",
    "import re",
    "",
    `from ${spec.package}.errors import CalculationError`,
    "",
    "# Integers longer than this are refused rather than parsed or printed.",
    "MAX_DIGITS = 1000",
    "# About MAX_DIGITS decimal digits.",
    "MAX_INT_BITS = 3322",
    "# Floats that are whole numbers below this print without a decimal point.",
    "EXACT_FLOAT_LIMIT = 2 ** 53",
    "",
    '_INTEGER = re.compile(r"[+-]?[0-9]+")',
    '_DECIMAL = re.compile(r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?")',
    "",
    "",
    "def parse_number(text):",
    docstring(
      "Return the int or float written in text.",
      "Raises CalculationError when text is not a number, is too long or is out of range.",
      4,
    ),
    "    if len(text) > MAX_DIGITS:",
    '        raise CalculationError(f"number too long: {len(text)} characters")',
    "    if _INTEGER.fullmatch(text):",
    "        return int(text)",
    "    if not _DECIMAL.fullmatch(text):",
    '        raise CalculationError(f"not a number: {text!r}")',
    "    value = float(text)",
    "    if not math.isfinite(value):",
    '        raise CalculationError(f"number out of range: {text!r}")',
    "    return value",
    "",
    "",
    "def format_number(value):",
    docstring(
      "Return value as the calculator prints it.",
      "Integral results print without a decimal point; other floats print in their shortest exact form. Raises CalculationError for results that are not finite real numbers or are too large to print.",
      4,
    ),
    "    if isinstance(value, complex):",
    '        raise CalculationError("the result is not a real number")',
    "    if isinstance(value, int):",
    "        if value.bit_length() > MAX_INT_BITS:",
    '            raise CalculationError("result too large")',
    "        return str(value)",
    "    if not math.isfinite(value):",
    '        raise CalculationError("result too large")',
    "    if value.is_integer() and abs(value) < EXACT_FLOAT_LIMIT:",
    "        return str(int(value))",
    "    return repr(value)",
  );
}

function opsInit(spec) {
  const ops = [...spec.operations].sort((a, b) => a.name.localeCompare(b.name));
  return file(
    docstring(`The ${spec.package} operations, by the name used on the command line.`, null, 0),
    "",
    ...ops.map((op) => `from ${spec.package}.ops.${op.name} import ${op.function}`),
    "",
    "# Operation name -> function of two numbers returning the result.",
    "OPERATIONS = {",
    ...ops.map((op) => `    ${str(op.name)}: ${op.function},`),
    "}",
  );
}

function mainModule(spec) {
  const command = `python3 -m ${spec.package}`;
  const width = Math.max(...spec.operations.map((op) => op.name.length));
  const usage = [
    `usage: ${command} <operation> <a> <b>`,
    "",
    "Prints the result of the operation on the numbers a and b.",
    "",
    "operations:",
    ...spec.operations.map(
      (op) => `    ${op.name.padEnd(width)}  a ${op.operator} b`.padEnd(width + 16) + op.summary,
    ),
  ];
  return file(
    docstring(
      `Command line: ${command} <operation> <a> <b> prints the result.`,
      [
        `Exit codes: 0 on success; ${spec.errorExitCode} for a bad command line, a bad number or an impossible calculation (such as a division by zero), with a message on standard error.`,
      ],
      0,
    ),
    "",
    "import sys",
    "",
    `from ${spec.package}.errors import CalculationError`,
    `from ${spec.package}.numbers import format_number, parse_number`,
    `from ${spec.package}.ops import OPERATIONS`,
    "",
    "EXIT_OK = 0",
    `EXIT_ERROR = ${spec.errorExitCode}`,
    `USAGE = """${usage[0]}`,
    ...usage.slice(1),
    '"""',
    "",
    "",
    "def fail(message):",
    docstring("Print an error message on standard error and return the error exit code.", null, 4),
    '    print(f"error: {message}", file=sys.stderr)',
    "    return EXIT_ERROR",
    "",
    "",
    "def main(argv=None):",
    docstring("Run the command line on argv (default sys.argv[1:]) and return the exit code.", null, 4),
    "    args = sys.argv[1:] if argv is None else list(argv)",
    '    if args and args[0] in ("-h", "--help"):',
    '        print(USAGE, end="")',
    "        return EXIT_OK",
    "    if len(args) != 3:",
    '        print(USAGE, end="", file=sys.stderr)',
    '        return fail(f"expected an operation and two numbers, got {len(args)} argument(s)")',
    "    name, first, second = args",
    "    operation = OPERATIONS.get(name)",
    "    if operation is None:",
    '        choices = ", ".join(sorted(OPERATIONS))',
    '        return fail(f"unknown operation {name!r}; choose one of {choices}")',
    "    try:",
    "        result = format_number(operation(parse_number(first), parse_number(second)))",
    "    except CalculationError as error:",
    "        return fail(error)",
    "    except (ArithmeticError, ValueError) as error:",
    '        return fail(f"cannot compute {name} {first} {second}: {error}")',
    "    print(result)",
    "    return EXIT_OK",
    "",
    "",
    'if __name__ == "__main__":',
    "    sys.exit(main())",
  );
}

function cliPackage(input) {
  const spec = readCommon(input);
  const pkg = spec.package;
  return [
    { path: `${pkg}/__init__.py`, content: packageInit(spec) },
    { path: `${pkg}/__main__.py`, content: mainModule(spec) },
    { path: `${pkg}/errors.py`, content: errorsModule(spec) },
    { path: `${pkg}/numbers.py`, content: numbersModule(spec) },
    { path: `${pkg}/ops/__init__.py`, content: opsInit(spec) },
  ];
}

// ---- one operation --------------------------------------------------------------------------------------

function operationModule(pkg, op) {
  const guards = op.errors.filter((e) => e.when in GUARD_CONDITIONS);
  const tooLarge = op.errors.find((e) => e.when === "result-too-large");
  const raises = op.errors.map((e) => e.message);
  const body = [];
  for (const guard of guards) {
    body.push(
      `    if ${GUARD_CONDITIONS[guard.when]}:`,
      `        raise CalculationError(${str(guard.message)})`,
    );
  }
  if (tooLarge && op.operator === "**") {
    // Exact integer powers grow as b * bits(a): refuse them before spending time and memory.
    body.push(
      "    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:",
      "        if (abs(a).bit_length() - 1) * b > MAX_INT_BITS:",
      `            raise CalculationError(${str(tooLarge.message)})`,
    );
  }
  if (tooLarge) {
    body.push(
      "    try:",
      `        return a ${op.operator} b`,
      "    except OverflowError:",
      `        raise CalculationError(${str(tooLarge.message)}) from None`,
    );
  } else {
    body.push(`    return a ${op.operator} b`);
  }
  const imports = [];
  if (op.errors.length > 0) imports.push(`from ${pkg}.errors import CalculationError`);
  if (tooLarge && op.operator === "**") imports.push(`from ${pkg}.numbers import MAX_INT_BITS`);
  return file(
    docstring(`The ${op.name} operation: ${lowerFirst(op.summary)}`, null, 0),
    ...(imports.length > 0 ? ["", ...imports] : []),
    "",
    "",
    `def ${op.function}(a, b):`,
    docstring(
      `Return a ${op.operator} b.`,
      [op.summary, ...(raises.length > 0 ? [`Raises CalculationError: ${raises.join("; ")}.`] : [])],
      4,
    ),
    ...body,
  );
}

function operation(input) {
  const pkg = identifier(input.package, "package");
  const op = readOperation(input.operation, "operation");
  return [{ path: `${pkg}/ops/${op.name}.py`, content: operationModule(pkg, op) }];
}

// ---- the unit tests -------------------------------------------------------------------------------------

function className(op) {
  return `${op.name
    .split("_")
    .filter(Boolean)
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join("")}Tests`;
}

function operationTests(spec) {
  const pkg = spec.package;
  const ops = [...spec.operations].sort((a, b) => a.name.localeCompare(b.name));
  const classes = ops.map((op) => {
    const lines = [
      "",
      "",
      `class ${className(op)}(unittest.TestCase):`,
      docstring(`The ${op.name} operation: ${lowerFirst(op.summary)}`, null, 4),
      "",
      "    def test_examples(self):",
      docstring("Each example of the spec gives its documented result.", null, 8),
      ...op.examples.map(
        (e) => `        self.assertEqual(format_number(${op.function}(${e.a}, ${e.b})), ${str(e.result)})`,
      ),
      "",
      "    def test_registered(self):",
      docstring("The command line finds the operation by its name.", null, 8),
      `        self.assertIs(OPERATIONS[${str(op.name)}], ${op.function})`,
    ];
    const refusals = op.errors.filter((e) => e.example);
    if (refusals.length > 0) {
      lines.push(
        "",
        "    def test_errors(self):",
        docstring(
          "Inputs the operation refuses raise CalculationError with the documented message.",
          null,
          8,
        ),
        ...refusals.flatMap((e) => [
          "        with self.assertRaises(CalculationError) as caught:",
          `            ${op.function}(${e.example.a}, ${e.example.b})`,
          `        self.assertIn(${str(e.message)}, str(caught.exception))`,
        ]),
      );
    }
    return lines.join("\n");
  });
  return file(
    docstring(`Unit tests of the ${pkg} operations, generated from the project spec.`, null, 0),
    "",
    "import unittest",
    "",
    `from ${pkg}.errors import CalculationError`,
    `from ${pkg}.numbers import format_number, parse_number`,
    `from ${pkg}.ops import OPERATIONS`,
    ...ops.map((op) => `from ${pkg}.ops.${op.name} import ${op.function}`),
    ...classes,
    "",
    "",
    "class NumberTests(unittest.TestCase):",
    docstring("Parsing arguments and formatting results.", null, 4),
    "",
    "    def test_parses_integers_and_decimals(self):",
    docstring("Integers stay exact; decimals and exponents become floats.", null, 8),
    '        self.assertEqual(parse_number("42"), 42)',
    '        self.assertIsInstance(parse_number("-7"), int)',
    '        self.assertEqual(parse_number("-1.5"), -1.5)',
    '        self.assertEqual(parse_number("2e3"), 2000.0)',
    '        self.assertEqual(parse_number(".5"), 0.5)',
    "",
    "    def test_refuses_what_is_not_a_number(self):",
    docstring("Words, empty strings, NaN and infinities are refused.", null, 8),
    '        for text in ("two", "", "nan", "inf", "1..2", "0x10", "1,5"):',
    "            with self.subTest(text=text):",
    "                with self.assertRaises(CalculationError):",
    "                    parse_number(text)",
    "",
    "    def test_refuses_numbers_out_of_range(self):",
    docstring("Decimals that overflow a float and overlong integers are refused.", null, 8),
    "        with self.assertRaises(CalculationError):",
    '            parse_number("1e999")',
    "        with self.assertRaises(CalculationError):",
    '            parse_number("9" * 2000)',
    "",
    "    def test_formats_results(self):",
    docstring("Whole numbers print without a decimal point; other floats print exactly.", null, 8),
    '        self.assertEqual(format_number(5), "5")',
    '        self.assertEqual(format_number(2.0), "2")',
    '        self.assertEqual(format_number(-0.0), "0")',
    '        self.assertEqual(format_number(0.25), "0.25")',
    '        self.assertEqual(format_number(0.1 + 0.2), "0.30000000000000004")',
    "",
    "    def test_refuses_results_that_cannot_print(self):",
    docstring("Infinite, complex and huge results are errors, not output.", null, 8),
    '        for value in (float("inf"), complex(0, 1), 10 ** 5000):',
    "            with self.subTest(value=type(value).__name__):",
    "                with self.assertRaises(CalculationError):",
    "                    format_number(value)",
    "",
    "",
    'if __name__ == "__main__":',
    "    unittest.main()",
  );
}

function cliTests(spec) {
  const pkg = spec.package;
  const code = spec.errorExitCode;
  const ops = [...spec.operations].sort((a, b) => a.name.localeCompare(b.name));
  const methods = ops.flatMap((op) => {
    const lines = [
      "",
      `    def test_${op.name}_prints_its_examples(self):`,
      docstring(`${op.name} prints each documented result and exits 0.`, null, 8),
      ...op.examples.map(
        (e) => `        self.assert_prints([${[op.name, e.a, e.b].map(str).join(", ")}], ${str(e.result)})`,
      ),
    ];
    const refusals = op.errors.filter((e) => e.example);
    if (refusals.length > 0) {
      lines.push(
        "",
        `    def test_${op.name}_reports_errors(self):`,
        docstring(`${op.name} reports refused inputs on stderr and exits ${code}.`, null, 8),
        ...refusals.map(
          (e) =>
            `        self.assert_fails([${[op.name, e.example.a, e.example.b].map(str).join(", ")}], ${str(e.message)})`,
        ),
      );
    }
    return lines;
  });
  const first = ops[0];
  return file(
    docstring(`End-to-end tests of python3 -m ${pkg}: output, exit codes and messages.`, null, 0),
    "",
    "import subprocess",
    "import sys",
    "import unittest",
    "from pathlib import Path",
    "",
    "PROJECT_ROOT = Path(__file__).resolve().parent.parent",
    `ERROR_EXIT_CODE = ${code}`,
    "OPERATION_NAMES = (",
    ...ops.map((op) => `    ${str(op.name)},`),
    ")",
    "",
    "",
    "def run_cli(*args):",
    docstring(
      `Run python3 -m ${pkg} with args from the project root; return the completed process.`,
      null,
      4,
    ),
    "    return subprocess.run(",
    `        [sys.executable, "-m", ${str(pkg)}, *args],`,
    "        capture_output=True,",
    "        text=True,",
    "        cwd=PROJECT_ROOT,",
    "        timeout=60,",
    "        check=False,",
    "    )",
    "",
    "",
    "class CommandLineTests(unittest.TestCase):",
    docstring(`Results go to stdout with exit code 0; errors go to stderr with exit code ${code}.`, null, 4),
    "",
    "    def assert_prints(self, args, expected):",
    docstring("Assert the command prints expected on stdout, nothing on stderr, and exits 0.", null, 8),
    "        result = run_cli(*args)",
    "        self.assertEqual(result.returncode, 0, result.stderr)",
    '        self.assertEqual(result.stdout, expected + "\\n")',
    '        self.assertEqual(result.stderr, "")',
    "",
    "    def assert_fails(self, args, message):",
    docstring("Assert the command exits with the error code and message on stderr only.", null, 8),
    "        result = run_cli(*args)",
    "        self.assertEqual(result.returncode, ERROR_EXIT_CODE, result.stdout)",
    "        self.assertIn(message, result.stderr)",
    '        self.assertEqual(result.stdout, "")',
    ...methods,
    "",
    "    def test_bad_numbers_are_reported(self):",
    docstring(`A word, NaN or an overflowing number exits ${code} with a message.`, null, 8),
    `        self.assert_fails([${str(first.name)}, "two", "3"], "not a number")`,
    `        self.assert_fails([${str(first.name)}, "1", "nan"], "not a number")`,
    `        self.assert_fails([${str(first.name)}, "1e999", "1"], "out of range")`,
    "",
    "    def test_unknown_operation_is_reported(self):",
    docstring("An operation that does not exist is named in the message.", null, 8),
    '        self.assert_fails(["frobnicate", "1", "2"], "unknown operation")',
    "",
    "    def test_wrong_argument_count_is_reported(self):",
    docstring("Too few or too many arguments print the usage and an error.", null, 8),
    `        self.assert_fails([${str(first.name)}, "1"], "expected an operation and two numbers")`,
    `        self.assert_fails([${str(first.name)}, "1", "2", "3"], "expected an operation and two numbers")`,
    '        self.assert_fails([], "usage:")',
    "",
    "    def test_help_lists_every_operation(self):",
    docstring("--help prints the usage with every operation and exits 0.", null, 8),
    '        result = run_cli("--help")',
    "        self.assertEqual(result.returncode, 0)",
    "        for name in OPERATION_NAMES:",
    "            self.assertIn(name, result.stdout)",
    "",
    "",
    'if __name__ == "__main__":',
    "    unittest.main()",
  );
}

function tests(input) {
  const spec = readCommon(input);
  if (spec.operations.some((op) => op.examples.length === 0))
    fail("operations", "every operation needs examples");
  return [
    { path: "tests/__init__.py", content: file(docstring(`Tests of the ${spec.package} package.`, null, 0)) },
    { path: "tests/test_operations.py", content: operationTests(spec) },
    { path: "tests/test_cli.py", content: cliTests(spec) },
  ];
}

const GENERATORS = { "cli-package": cliPackage, operation, tests };

export default {
  /**
   * @param {{ kind: "cli-package" | "operation" | "tests" } & Record<string, unknown>} input
   * @param {{ artifacts: { write(path: string, content: string): Promise<unknown> } }} ctx
   */
  async run(input, ctx) {
    const generate = GENERATORS[input?.kind];
    if (!generate) fail("kind", `must be one of ${Object.keys(GENERATORS).join(", ")}`);
    const files = generate(input);
    for (const f of files) await ctx.artifacts.write(f.path, f.content);
    return {
      files,
      summary: `${input.kind}: wrote ${files.map((f) => f.path).join(", ")}`,
    };
  },
};
