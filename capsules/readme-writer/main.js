// Writes a project README in Markdown from structured content: a title, a description, requirements, a
// Usage section with a fenced synopsis and example transcript, a reference table and free sections.
// Deterministic, so the same inputs always give the same file.

const MAX_TEXT = 4000;

function fail(path, message) {
  throw new TypeError(`input ${path}: ${message}`);
}

function text(value, path, { optional = false, max = MAX_TEXT } = {}) {
  if (value === undefined && optional) return undefined;
  if (typeof value !== "string" || value.trim() === "" || value.length > max) {
    fail(path, `must be a non-empty string of at most ${max} characters`);
  }
  return value.trim();
}

function list(value, path, max = 50) {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > max) fail(path, `must be a list of at most ${max} items`);
  return value;
}

/** A fenced code block whose fence is longer than any backtick run inside it. */
function fence(language, body) {
  const longest = Math.max(2, ...(body.match(/`+/g) ?? []).map((run) => run.length));
  const marks = "`".repeat(longest + 1);
  return `${marks}${language}\n${body.replace(/\n+$/, "")}\n${marks}`;
}

/** A table cell: pipes escaped, one line. */
function cell(value) {
  return String(value)
    .replace(/\|/g, "\\|")
    .replace(/\s*\n\s*/g, " ");
}

/** A console transcript: each command after `$ `, then what it prints and, when not 0, its exit code. */
function transcript(runs, path) {
  const lines = [];
  list(runs, path).forEach((run, i) => {
    lines.push(`$ ${text(run?.command, `${path}[${i}].command`, { max: 500 })}`);
    if (run.output !== undefined) lines.push(text(run.output, `${path}[${i}].output`));
    if (run.stderr !== undefined) lines.push(text(run.stderr, `${path}[${i}].stderr`));
    if (run.exitCode !== undefined && run.exitCode !== 0) {
      if (!Number.isInteger(run.exitCode)) fail(`${path}[${i}].exitCode`, "must be an integer");
      lines.push("$ echo $?", String(run.exitCode));
    }
  });
  return lines.join("\n");
}

function section(content, path) {
  const heading = text(content?.heading, `${path}.heading`, { max: 100 });
  const parts = [`## ${heading}`];
  for (const [i, paragraph] of list(content.paragraphs, `${path}.paragraphs`).entries()) {
    parts.push(text(paragraph, `${path}.paragraphs[${i}]`));
  }
  if (content.transcript !== undefined) {
    parts.push(fence("console", transcript(content.transcript, `${path}.transcript`)));
  }
  if (content.code !== undefined) {
    parts.push(
      fence(
        text(content.code.language, `${path}.code.language`, { optional: true, max: 20 }) ?? "",
        text(content.code.text, `${path}.code.text`),
      ),
    );
  }
  return parts.join("\n\n");
}

/** Renders the README; every part but the title and description is optional. */
export function renderReadme(input) {
  const parts = [`# ${text(input.title, "title", { max: 100 })}`, text(input.description, "description")];
  const requirements = list(input.requirements, "requirements");
  if (requirements.length > 0) {
    parts.push(
      "## Requirements",
      requirements.map((r, i) => `- ${text(r, `requirements[${i}]`, { max: 500 })}`).join("\n"),
    );
  }
  if (input.usage !== undefined) {
    const usage = input.usage;
    parts.push("## Usage", fence("sh", text(usage.synopsis, "usage.synopsis", { max: 500 })));
    if (usage.text !== undefined) parts.push(text(usage.text, "usage.text"));
    if (usage.examples !== undefined) {
      parts.push("Example:", fence("console", transcript(usage.examples, "usage.examples")));
    }
  }
  if (input.reference !== undefined) {
    const ref = input.reference;
    const columns = list(ref.columns, "reference.columns", 10).map((c, i) =>
      text(c, `reference.columns[${i}]`, { max: 100 }),
    );
    if (columns.length === 0) fail("reference.columns", "needs at least one column");
    const rows = list(ref.rows, "reference.rows", 200).map((row, i) => {
      if (!Array.isArray(row) || row.length !== columns.length) {
        fail(`reference.rows[${i}]`, `must have ${columns.length} cells`);
      }
      return `| ${row.map(cell).join(" | ")} |`;
    });
    parts.push(
      `## ${text(ref.heading, "reference.heading", { max: 100 })}`,
      [`| ${columns.map(cell).join(" | ")} |`, `|${columns.map(() => "---").join("|")}|`, ...rows].join("\n"),
    );
  }
  for (const [i, content] of list(input.sections, "sections").entries()) {
    parts.push(section(content, `sections[${i}]`));
  }
  return `${parts.join("\n\n")}\n`;
}

export default {
  /**
   * @param {Record<string, unknown>} input
   * @param {{ artifacts: { write(path: string, content: string): Promise<unknown> } }} ctx
   */
  async run(input, ctx) {
    const path = input?.path === undefined ? "README.md" : text(input.path, "path", { max: 200 });
    if (!/\.(md|markdown)$/i.test(path)) fail("path", "must name a Markdown file (.md)");
    const content = renderReadme(input ?? {});
    await ctx.artifacts.write(path, content);
    return { files: [{ path, content }], summary: `wrote ${path} (${content.length} characters)` };
  },
};
