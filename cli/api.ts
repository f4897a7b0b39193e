import type { Connection } from "./config.ts";
import { ApiError, CliError } from "./errors.ts";

export interface RequestOptions {
  /** Sent as JSON with Content-Type application/json. */
  json?: unknown;
  /** Raw bytes, sent with `contentType`. */
  body?: Uint8Array;
  contentType?: string;
  query?: Record<string, string | number | undefined>;
  /** Whether to send the token (when one is configured). Defaults to true. */
  auth?: boolean;
}

/** Turns a non-2xx response into an ApiError, keeping the platform's code, message, request id and details. */
async function toApiError(response: Response): Promise<ApiError> {
  const text = await response.text();
  const fallbackId = response.headers.get("x-request-id") ?? undefined;
  try {
    const body = JSON.parse(text) as {
      error?: { code?: unknown; message?: unknown; requestId?: unknown; details?: unknown };
    };
    const error = body.error;
    if (error && typeof error.code === "string" && typeof error.message === "string") {
      const requestId = typeof error.requestId === "string" ? error.requestId : fallbackId;
      return new ApiError(response.status, error.code, error.message, requestId, error.details);
    }
  } catch {
    // Not the platform's error shape (a proxy or a crash page): report the status and the start of the body.
  }
  const snippet = text.trim().slice(0, 200);
  return new ApiError(
    response.status,
    `HTTP_${response.status}`,
    `${response.status} ${response.statusText}${snippet ? `: ${snippet}` : ""}`,
    fallbackId,
  );
}

/** A thin client for the platform's HTTP API. */
export class ApiClient {
  connection: Connection;

  constructor(connection: Connection) {
    this.connection = connection;
  }

  /** Sends a request and returns the successful response; API errors are thrown as ApiError. */
  async send(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const url = new URL(path.replace(/^\//, ""), `${this.connection.url}/`);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    const headers = new Headers({ accept: "application/json" });
    if (options.auth !== false && this.connection.token) {
      headers.set("authorization", `Bearer ${this.connection.token}`);
    }
    let body: RequestInit["body"];
    if (options.json !== undefined) {
      headers.set("content-type", "application/json");
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers.set("content-type", options.contentType ?? "application/octet-stream");
      // fetch types want an ArrayBuffer-backed view; a Buffer may sit on a shared pool, so send a copy.
      body = new Uint8Array(options.body);
    }
    let response: Response;
    try {
      response = await fetch(url, { method, headers, body });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(
        `Cannot reach ${this.connection.url}: ${cause?.code ?? cause?.message ?? (error as Error).message}`,
        {
          code: "NETWORK",
        },
      );
    }
    if (!response.ok) throw await toApiError(response);
    return response;
  }

  /** Sends a request and parses the JSON answer. */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.send(method, path, options);
    const text = await response.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new CliError(`${method} ${path} answered ${response.status} with a body that is not JSON`, {
        code: "BAD_RESPONSE",
      });
    }
  }

  /** Fetches the exact bytes of a resource. */
  async bytes(path: string, options: RequestOptions = {}): Promise<Uint8Array> {
    const response = await this.send("GET", path, options);
    return new Uint8Array(await response.arrayBuffer());
  }

  /** Fetches a resource as text. */
  async text(path: string, options: RequestOptions = {}): Promise<string> {
    const response = await this.send("GET", path, options);
    return response.text();
  }
}
