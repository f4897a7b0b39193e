import { ApiClient } from "../api.ts";
import { stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { configPath, resolveConnection, saveConfig } from "../config.ts";
import { UsageError } from "../errors.ts";
import { emit } from "../output.ts";

const API_KEY_PREFIX = "soma_";

interface TokenResponse {
  accessToken: string;
  tokenType: string;
  expiresIn: number;
}

/** `soma login`: checks an API key against the platform and saves url and token for later commands. */
export const loginCommand: Command = {
  name: "login",
  summary: "Save the platform URL and your API key",
  help: `Usage: soma login --url <url> --token <token>

Checks an API key (soma_...) by exchanging it at POST /v1/auth/token, then saves the URL and key to
$SOMA_CONFIG or ~/.config/soma/config.json (mode 0600). Other tokens are saved without a check.

${COMMON_HELP}`,
  options: {},
  positionals: { min: 0, max: 0 },
  async run({ values }, { io, env }) {
    const connection = await resolveConnection(values, env);
    // Only a token given now is checked and saved; the previously saved one is what is being replaced.
    const token = stringOption(values, "token") || env.SOMA_TOKEN;
    if (!token) throw new UsageError("Pass the API key with --token (or SOMA_TOKEN)");
    let checked: TokenResponse | null = null;
    if (token.startsWith(API_KEY_PREFIX)) {
      const client = new ApiClient({ ...connection, token: undefined });
      checked = await client.json<TokenResponse>("POST", "/v1/auth/token", {
        json: { apiKey: token },
        auth: false,
      });
    }
    const path = await saveConfig({ url: connection.url, token }, configPath(env));
    const result = {
      url: connection.url,
      configPath: path,
      verified: checked !== null,
      expiresIn: checked?.expiresIn,
    };
    emit(io, values.json === true, result, () => [
      checked
        ? `Logged in to ${connection.url}: the API key is valid (access tokens last ${checked.expiresIn} s).`
        : `Saved a token for ${connection.url} without checking it (not an API key).`,
      `Credentials saved to ${path}`,
    ]);
    return 0;
  },
};
