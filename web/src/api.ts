import type { AppType } from "@api/app";
import { type ClientResponse, hc } from "hono/client";

/** What the browser keeps between page loads of one tab: the API key and the access token it buys. */
export interface Session {
  handle: string;
  roles: string[];
  apiKey: string;
  accessToken: string;
  expiresAt: number;
}

const SESSION_KEY = "soma.session";

// Session storage, not local storage: a key pasted into one tab is forgotten when the tab closes.
export function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

let session: Session | null = loadSession();
const listeners = new Set<() => void>();

export function currentSession(): Session | null {
  return session;
}

export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function setSession(next: Session | null): void {
  session = next;
  if (next) sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
  else sessionStorage.removeItem(SESSION_KEY);
  for (const listener of listeners) listener();
}

export function signOut(): void {
  setSession(null);
}

/** An API answer that was not a success, with the platform's own words for what went wrong. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

interface ErrorBody {
  error?: { code?: string; message?: string; details?: unknown };
}

async function toApiError(response: Response): Promise<ApiError> {
  let body: ErrorBody = {};
  try {
    body = (await response.json()) as ErrorBody;
  } catch {
    // Not JSON (a proxy or a crash page): the status line is all there is.
  }
  const issues = (body.error?.details as { issues?: { path: string; message: string }[] } | undefined)
    ?.issues;
  const explained = issues?.length ? `: ${issues.map((i) => `${i.path} ${i.message}`).join("; ")}` : "";
  return new ApiError(
    response.status,
    body.error?.code ?? `HTTP_${response.status}`,
    `${body.error?.message ?? `The server answered ${response.status} ${response.statusText}`}${explained}`,
    body.error?.details,
  );
}

const plainClient = hc<AppType>("/");

/** Trades an API key for an access token and remembers both. */
export async function signIn(apiKey: string): Promise<Session> {
  const response = await plainClient.v1.auth.token.$post({ json: { apiKey: apiKey.trim() } });
  if (!response.ok) throw await toApiError(response);
  const { accessToken, expiresIn } = await response.json();
  const claims = decodeClaims(accessToken);
  const next: Session = {
    handle: claims.handle,
    roles: claims.roles,
    apiKey: apiKey.trim(),
    accessToken,
    expiresAt: Date.now() + expiresIn * 1000,
  };
  setSession(next);
  return next;
}

function decodeClaims(jwt: string): { handle: string; roles: string[] } {
  const payload = jwt.split(".")[1] ?? "";
  const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
  const claims = JSON.parse(json) as { handle?: string; roles?: string[] };
  return { handle: claims.handle ?? "", roles: claims.roles ?? [] };
}

/** A fresh access token, renewed from the API key a minute before it runs out. */
export async function accessToken(): Promise<string | null> {
  if (!session) return null;
  if (session.expiresAt - Date.now() < 60_000) await signIn(session.apiKey);
  return session?.accessToken ?? null;
}

async function authorizedFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const token = await accessToken();
  const headers = new Headers(init?.headers);
  if (token && !headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

/** The typed API client: routes, parameters and answers come from the Worker's Hono app. */
export const api = hc<AppType>("/", { fetch: authorizedFetch });

/** The JSON body of a client answer; routes that can also answer CSV keep only their JSON shape. */
type JsonOf<R> =
  R extends ClientResponse<infer O, number, infer F>
    ? string extends F
      ? never
      : F extends "json"
        ? O
        : never
    : never;

/** Awaits a client call and returns its JSON, or throws an ApiError in words. */
export async function json<R extends ClientResponse<unknown, number, string>>(
  call: Promise<R>,
): Promise<JsonOf<R>> {
  const response = (await call) as unknown as Response;
  if (!response.ok) throw await toApiError(response);
  return (await response.json()) as JsonOf<R>;
}

/** For calls whose answer is not JSON (uploads that need raw bodies, CSV, archives). */
export async function raw(path: string, init?: RequestInit): Promise<Response> {
  const response = await authorizedFetch(path, init);
  if (!response.ok) throw await toApiError(response);
  return response;
}

/** Fetches a protected file and hands it to the browser as a download. */
export async function download(path: string, filename: string): Promise<void> {
  const response = await raw(path);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
