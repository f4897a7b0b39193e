import { readFileSync } from "node:fs";
import { parseCommandArgs } from "./args.ts";
import type { Command, CommandContext } from "./command.ts";
import { auditCommand } from "./commands/audit.ts";
import { initCommand } from "./commands/init.ts";
import { installCommand } from "./commands/install.ts";
import { loginCommand } from "./commands/login.ts";
import { packCommand } from "./commands/pack.ts";
import { publishCommand } from "./commands/publish.ts";
import { runnerCommand } from "./commands/runner.ts";
import { searchCommand } from "./commands/search.ts";
import { signupCommand } from "./commands/signup.ts";
import { verifyCommand } from "./commands/verify.ts";
import { webhookVerifyCommand } from "./commands/webhook-verify.ts";
import { UsageError } from "./errors.ts";
import { emitError } from "./output.ts";

export const COMMANDS: Command[] = [
  signupCommand,
  loginCommand,
  initCommand,
  packCommand,
  publishCommand,
  searchCommand,
  installCommand,
  verifyCommand,
  runnerCommand,
  webhookVerifyCommand,
  auditCommand,
];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version?: string;
  };
  return pkg.version ?? "0.0.0";
}

/** The top-level help. */
export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `soma: the SomaAgent Edge command line

Usage: soma <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Every command takes --url and --token (else $SOMA_URL/$SOMA_TOKEN, else what \`soma login\` saved in
$SOMA_CONFIG or ~/.config/soma/config.json) and --json for machine-readable output.
Exit codes: 0 ok, 1 failure, 2 usage error. Run \`soma <command> --help\` for details.
`;
}

/** Runs the CLI with the given arguments and returns the exit code. */
export async function main(argv: string[], context: CommandContext): Promise<number> {
  const { io } = context;
  const [first, ...rest] = argv;
  if (first === undefined) {
    io.stderr(mainHelp());
    return 2;
  }
  if (first === "--help" || first === "-h") {
    io.stdout(mainHelp());
    return 0;
  }
  if (first === "--version" || first === "-v") {
    io.stdout(`${version()}\n`);
    return 0;
  }
  if (first === "help") {
    const target = COMMANDS.find((c) => c.name === rest[0]);
    io.stdout(target ? `${target.help}\n` : mainHelp());
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === first);
  const json = rest.includes("--json");
  if (!command) {
    return emitError(
      io,
      json,
      new UsageError(`Unknown command "${first}". Run \`soma --help\` for the list.`),
    );
  }
  try {
    const args = parseCommandArgs(rest, command.options, command.positionals);
    if (args.values.help === true) {
      io.stdout(`${command.help}\n`);
      return 0;
    }
    return await command.run(args, context);
  } catch (error) {
    const code = emitError(io, json, error);
    if (error instanceof UsageError && !json) io.stderr(`Run \`soma ${command.name} --help\` for usage.\n`);
    return code;
  }
}
