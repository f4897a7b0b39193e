import { ApiError, CliError } from "./errors.ts";

/** Where a command writes; swapped for buffers in tests. */
export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export const processIo: Io = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Prints a result: the JSON value with --json, else the human lines. */
export function emit(io: Io, json: boolean, data: unknown, human: () => string | string[]): void {
  if (json) {
    io.stdout(`${JSON.stringify(data, null, 2)}\n`);
    return;
  }
  const text = human();
  const lines = Array.isArray(text) ? text.join("\n") : text;
  if (lines !== "") io.stdout(lines.endsWith("\n") ? lines : `${lines}\n`);
}

/** Prints an error: code and message for people, the error body shape with --json. */
export function emitError(io: Io, json: boolean, error: unknown): number {
  if (error instanceof CliError) {
    const requestId = error instanceof ApiError ? error.requestId : undefined;
    if (json) {
      const body = {
        error: {
          code: error.code,
          message: error.message,
          ...(requestId ? { requestId } : {}),
          ...(error.details !== undefined ? { details: error.details } : {}),
        },
      };
      io.stdout(`${JSON.stringify(body, null, 2)}\n`);
    } else {
      const suffix = requestId ? ` (request ${requestId})` : "";
      io.stderr(`error: ${error.code}: ${error.message}${suffix}\n`);
    }
    return error.exitCode;
  }
  const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
  if (json)
    io.stdout(`${JSON.stringify({ error: { code: "INTERNAL", message: String(error) } }, null, 2)}\n`);
  else io.stderr(`error: INTERNAL: ${message}\n`);
  return 1;
}

/** Lays out rows as aligned columns under a header; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** Shortens text to `max` characters with an ellipsis. */
export function truncate(text: string, max: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

/** Human-readable byte size. */
export function formatBytes(size: number): string {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}
