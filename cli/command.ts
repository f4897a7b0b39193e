import type { ParseArgsOptionsConfig } from "node:util";
import type { ParsedCommand } from "./args.ts";
import type { Io } from "./output.ts";

/** What a command needs from the process, passed in so tests can run commands in-process. */
export interface CommandContext {
  io: Io;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

/** One `soma <name>` command. `run` returns the exit code (0 unless the outcome itself is a failure). */
export interface Command {
  name: string;
  summary: string;
  /** Full help: usage line, description, options. */
  help: string;
  options: ParseArgsOptionsConfig;
  positionals: { min: number; max: number };
  run: (args: ParsedCommand, context: CommandContext) => Promise<number>;
}

/** Help lines for the options every command takes. */
export const COMMON_HELP = `Common options:
  --url <url>        Platform URL (else $SOMA_URL, else the one saved by login)
  --token <token>    API key or access token (else $SOMA_TOKEN, else the saved one)
  --json             Print machine-readable JSON
  -h, --help         Show this help`;
