/** A failure the user can act on; `exitCode` 1 means the operation failed, 2 means the command was misused. */
export class CliError extends Error {
  exitCode: number;
  code: string;
  details: unknown;

  constructor(message: string, options: { exitCode?: number; code?: string; details?: unknown } = {}) {
    super(message);
    this.name = "CliError";
    this.exitCode = options.exitCode ?? 1;
    this.code = options.code ?? "CLI_ERROR";
    this.details = options.details;
  }
}

/** A bad command line: unknown option, missing argument, malformed value. Exits with 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, { exitCode: 2, code: "USAGE" });
    this.name = "UsageError";
  }
}

/** An error answered by the platform API in its `{ error: { code, message, requestId, details? } }` shape. */
export class ApiError extends CliError {
  status: number;
  requestId: string | undefined;

  constructor(status: number, code: string, message: string, requestId?: string, details?: unknown) {
    super(message, { exitCode: 1, code, details });
    this.name = "ApiError";
    this.status = status;
    this.requestId = requestId;
  }
}
