// The KAMACHIQ quality gate. Every check is deterministic so a score can be reproduced from the output alone.

/** Files a task produced: `output.files` as [{ path, content }]. */
function filesOf(output) {
  if (!output || typeof output !== "object" || !Array.isArray(output.files)) return [];
  return output.files.filter((f) => f && typeof f.path === "string" && typeof f.content === "string");
}

function textOf(output) {
  return typeof output === "string" ? output : JSON.stringify(output ?? null);
}

/** Success criteria mini-language: file:<path>, contains:<text>, key:<name>, tests:pass, or free text. */
function criterionMet(criterion, output, files) {
  const [kind, ...rest] = criterion.split(":");
  const arg = rest.join(":").trim();
  switch (kind.trim()) {
    case "file":
      return files.some((f) => f.path === arg);
    case "contains":
      return textOf(output).includes(arg);
    case "key":
      return output !== null && typeof output === "object" && arg in output;
    case "tests":
      return (
        Boolean(output?.tests) &&
        output.tests.failed === 0 &&
        output.tests.errors === 0 &&
        output.tests.passed > 0
      );
    default:
      return textOf(output).toLowerCase().includes(criterion.toLowerCase());
  }
}

/** Bracket and quote balance of a Python source, ignoring strings and comments. */
function pythonStructureProblems(path, source) {
  const problems = [];
  const stack = [];
  const pairs = { ")": "(", "]": "[", "}": "{" };
  let i = 0;
  while (i < source.length) {
    const ch = source[i];
    if (ch === "#") {
      while (i < source.length && source[i] !== "\n") i++;
      continue;
    }
    if (ch === '"' || ch === "'") {
      const triple = source.slice(i, i + 3) === ch.repeat(3);
      const end = triple ? source.indexOf(ch.repeat(3), i + 3) : source.indexOf(ch, i + 1);
      if (end === -1) {
        problems.push(`${path}: unterminated string`);
        break;
      }
      if (!triple && source.slice(i, end).includes("\n"))
        problems.push(`${path}: string runs across a line break`);
      i = end + (triple ? 3 : 1);
      continue;
    }
    if ("([{".includes(ch)) stack.push(ch);
    else if (")]}".includes(ch) && stack.pop() !== pairs[ch]) problems.push(`${path}: unbalanced '${ch}'`);
    i++;
  }
  if (stack.length > 0) problems.push(`${path}: unclosed '${stack[stack.length - 1]}'`);
  const lines = source.split("\n");
  lines.forEach((line, n) => {
    const indent = line.match(/^ */)[0].length;
    if (line.trim() && indent % 4 !== 0)
      problems.push(`${path}:${n + 1}: indentation is not a multiple of 4`);
    const head = line.trim();
    if (/^(def|class|if|elif|else|for|while|try|except|finally|with)\b/.test(head)) {
      const opens = (head.match(/[([{]/g) ?? []).length;
      const closes = (head.match(/[)\]}]/g) ?? []).length;
      if (opens === closes && !head.includes(":") && !head.endsWith("\\")) {
        problems.push(`${path}:${n + 1}: block statement without ':'`);
      }
    }
    if (/^\s*(def|class)\b/.test(line)) {
      const next = lines.slice(n + 1).find((l) => l.trim() !== "");
      if (!next || next.match(/^ */)[0].length <= indent)
        problems.push(`${path}:${n + 1}: '${line.trim()}' has no body`);
    }
  });
  return problems;
}

function styleProblems(path, source) {
  const problems = [];
  source.split("\n").forEach((line, n) => {
    if (line.length > 100) problems.push(`${path}:${n + 1}: line longer than 100 characters`);
    if (/\s+$/.test(line)) problems.push(`${path}:${n + 1}: trailing whitespace`);
    if (line.includes("\t")) problems.push(`${path}:${n + 1}: tab character`);
    const def = line.match(/^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)/);
    if (def && !/^[a-z_][a-z0-9_]*$/.test(def[1]))
      problems.push(`${path}:${n + 1}: function '${def[1]}' is not snake_case`);
  });
  if (source.length > 0 && !source.endsWith("\n")) problems.push(`${path}: no newline at end of file`);
  return problems;
}

/** Share of modules and functions that carry a docstring (Python) or headings and usage (Markdown). */
function documentationScore(files) {
  let documented = 0;
  let total = 0;
  const missing = [];
  for (const file of files) {
    if (file.path.endsWith(".py")) {
      const lines = file.content.split("\n");
      const first = lines.find((l) => l.trim() && !l.startsWith("#"));
      total += 1;
      if (first && /^\s*("""|''')/.test(first)) documented += 1;
      else missing.push(`${file.path}: no module docstring`);
      lines.forEach((line, n) => {
        if (!/^\s*def\s/.test(line)) return;
        total += 1;
        const body = lines.slice(n + 1).find((l) => l.trim() !== "");
        if (body && /^\s*("""|''')/.test(body)) documented += 1;
        else missing.push(`${file.path}:${n + 1}: function without a docstring`);
      });
    } else if (/\.(md|rst|txt)$/i.test(file.path)) {
      total += 2;
      if (/^#\s+\S/m.test(file.content)) documented += 1;
      else missing.push(`${file.path}: no top-level heading`);
      if (/usage|example/i.test(file.content) && /```|^ {4}\S/m.test(file.content)) documented += 1;
      else missing.push(`${file.path}: no usage example`);
    }
  }
  return { score: total === 0 ? 1 : documented / total, missing };
}

export default {
  async run(input) {
    const output = input?.output ?? null;
    const criteria = Array.isArray(input?.task?.successCriteria) ? input.task.successCriteria : [];
    const files = filesOf(output);
    const feedback = [];

    let completeness;
    if (criteria.length > 0) {
      const unmet = criteria.filter((c) => !criterionMet(c, output, files));
      completeness = (criteria.length - unmet.length) / criteria.length;
      for (const c of unmet) feedback.push(`Unmet success criterion: ${c}`);
    } else {
      completeness =
        output === null || (typeof output === "object" && Object.keys(output).length === 0) ? 0 : 1;
      if (completeness === 0) feedback.push("The task produced no output");
    }

    let correctness = 1;
    if (output && typeof output === "object" && output.tests && typeof output.tests === "object") {
      const { passed = 0, failed = 0, errors = 0 } = output.tests;
      const run = passed + failed + errors;
      correctness = run === 0 ? 0 : passed / run;
      if (run === 0) feedback.push("No tests ran");
      if (failed + errors > 0) feedback.push(`${failed + errors} of ${run} tests failed or errored`);
    } else if (output && typeof output === "object" && output.error) {
      correctness = 0;
      feedback.push(`The output reports an error: ${String(output.error).slice(0, 300)}`);
    }
    const python = files.filter((f) => f.path.endsWith(".py"));
    if (python.length > 0) {
      const problems = python.flatMap((f) => pythonStructureProblems(f.path, f.content));
      const broken = new Set(problems.map((p) => p.split(":")[0]));
      correctness = Math.min(correctness, (python.length - broken.size) / python.length);
      feedback.push(...problems.slice(0, 20));
    }

    const code = files.filter((f) => /\.(py|js|ts|sh)$/.test(f.path));
    const lineCount = code.reduce((n, f) => n + f.content.split("\n").length, 0);
    const styleIssues = code.flatMap((f) => styleProblems(f.path, f.content));
    const style = lineCount === 0 ? 1 : Math.max(0, 1 - styleIssues.length / Math.max(10, lineCount / 5));
    feedback.push(...styleIssues.slice(0, 20));

    const docs = documentationScore(files);
    feedback.push(...docs.missing.slice(0, 20));

    const round = (n) => Math.round(n * 1000) / 1000;
    return {
      scores: {
        completeness: round(completeness),
        correctness: round(correctness),
        style: round(style),
        documentation: round(docs.score),
      },
      feedback: feedback.length === 0 ? "Meets every check of the rubric." : feedback.join("\n"),
    };
  },
};
