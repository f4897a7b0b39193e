import { ApiClient } from "../api.ts";
import { requiredOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { configPath, resolveConnection, saveConfig } from "../config.ts";
import { emit } from "../output.ts";

interface SignupResponse {
  account: { id: string; handle: string; email?: string; roles?: string[] };
  apiKey: string;
}

/** `soma signup`: creates an account and saves its first API key like `soma login`. */
export const signupCommand: Command = {
  name: "signup",
  summary: "Create an account and save its API key",
  help: `Usage: soma signup --handle <handle> --email <email> [--url <url>]

Creates an account (POST /v1/accounts). The handle becomes your capsule namespace (<handle>/<name>).
The new API key is shown once and saved like \`soma login\` does.

${COMMON_HELP}`,
  options: { handle: { type: "string" }, email: { type: "string" } },
  positionals: { min: 0, max: 0 },
  async run({ values }, { io, env }) {
    const handle = requiredOption(values, "handle");
    const email = requiredOption(values, "email");
    const connection = await resolveConnection(values, env);
    const client = new ApiClient({ ...connection, token: undefined });
    const created = await client.json<SignupResponse>("POST", "/v1/accounts", {
      json: { handle, email },
      auth: false,
    });
    const path = await saveConfig({ url: connection.url, token: created.apiKey }, configPath(env));
    emit(io, values.json === true, { ...created, configPath: path }, () => [
      `Created account ${created.account.handle} (${created.account.id}).`,
      `API key: ${created.apiKey}`,
      `It is shown only once; it was saved to ${path}`,
    ]);
    return 0;
  },
};
