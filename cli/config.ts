import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { type OptionValues, stringOption } from "./args.ts";
import { CliError, UsageError } from "./errors.ts";

/** What `soma login` and `soma signup` remember. */
export interface SavedConfig {
  url?: string;
  token?: string;
}

/** Where credentials live: `$SOMA_CONFIG`, else `~/.config/soma/config.json`. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.SOMA_CONFIG || join(homedir(), ".config", "soma", "config.json");
}

/** Reads the saved config; a missing file is an empty config, a corrupt one an error. */
export async function readConfig(path = configPath()): Promise<SavedConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw error;
  }
  try {
    const data = JSON.parse(text) as unknown;
    if (typeof data !== "object" || data === null || Array.isArray(data)) throw new Error("not an object");
    const { url, token } = data as Record<string, unknown>;
    return {
      ...(typeof url === "string" ? { url } : {}),
      ...(typeof token === "string" ? { token } : {}),
    };
  } catch (error) {
    throw new CliError(
      `The config file ${path} is not valid JSON (${(error as Error).message}); fix or delete it`,
    );
  }
}

/** Saves the config readable by the owner only (it holds an API key), replacing the file atomically. */
export async function saveConfig(config: SavedConfig, path = configPath()): Promise<string> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await rename(temp, path);
  return path;
}

/** The server and credentials a command talks to. */
export interface Connection {
  url: string;
  token: string | undefined;
}

/** Normalises a base URL: must be http(s), no trailing slash. */
export function normaliseUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`"${raw}" is not a URL; expected something like http://127.0.0.1:8787`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`The server URL must use http or https, got ${url.protocol}`);
  }
  return url.toString().replace(/\/+$/, "");
}

/** Resolves url and token: command-line options first, then SOMA_URL/SOMA_TOKEN, then the saved config. */
export async function resolveConnection(
  values: OptionValues,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Connection> {
  const saved = await readConfig(configPath(env));
  const url = stringOption(values, "url") || env.SOMA_URL || saved.url;
  if (!url) {
    throw new UsageError(
      "No server URL: pass --url, set SOMA_URL, or run `soma login --url <url> --token <token>`",
    );
  }
  const token = stringOption(values, "token") || env.SOMA_TOKEN || saved.token || undefined;
  return { url: normaliseUrl(url), token };
}

/** The token, or a usage error saying how to get one. */
export function requireToken(connection: Connection): string {
  if (!connection.token) {
    throw new UsageError(
      "This command needs a token: pass --token, set SOMA_TOKEN, or run `soma login`/`soma signup`",
    );
  }
  return connection.token;
}
