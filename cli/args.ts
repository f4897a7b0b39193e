import { type ParseArgsOptionsConfig, parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

/** Options every command accepts. */
export const COMMON_OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const satisfies ParseArgsOptionsConfig;

export type OptionValues = Record<string, string | boolean | undefined>;

export interface ParsedCommand {
  values: OptionValues;
  positionals: string[];
}

/**
 * Parses a command's arguments (strict: unknown options and missing values are usage errors).
 * The common options are always included.
 */
export function parseCommandArgs(
  argv: string[],
  options: ParseArgsOptionsConfig,
  positionals: { min: number; max: number },
): ParsedCommand {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...COMMON_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const values = parsed.values as OptionValues;
  if (values.help) return { values, positionals: parsed.positionals };
  const count = parsed.positionals.length;
  if (count < positionals.min) throw new UsageError("Missing argument");
  if (count > positionals.max) {
    throw new UsageError(`Unexpected argument "${parsed.positionals[positionals.max]}"`);
  }
  return { values, positionals: parsed.positionals };
}

/** A string option, or undefined when absent. */
export function stringOption(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

/** A string option that must be present. */
export function requiredOption(values: OptionValues, name: string): string {
  const value = stringOption(values, name);
  if (value === undefined || value === "") throw new UsageError(`Option --${name} is required`);
  return value;
}

/** A non-negative integer option, or undefined when absent. */
export function integerOption(values: OptionValues, name: string, min = 0): number | undefined {
  const raw = stringOption(values, name);
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < min || !Number.isSafeInteger(Number(raw))) {
    throw new UsageError(`Option --${name} must be an integer >= ${min}, got "${raw}"`);
  }
  return Number(raw);
}

/** A comma-separated list option ("a,b, c"), empty entries dropped. */
export function listOption(values: OptionValues, name: string): string[] {
  const raw = stringOption(values, name);
  if (raw === undefined) return [];
  return raw
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}
