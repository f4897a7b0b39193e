/** The closed list of error codes the platform answers with. The API layer maps each to one HTTP status. */
export const ERROR_CODES = [
  "BAD_REQUEST",
  "VALIDATION_FAILED",
  "INVALID_BUNDLE",
  "UNAUTHENTICATED",
  "FORBIDDEN",
  "NOT_FOUND",
  "CONFLICT",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "RATE_LIMITED",
  "DEPENDENCY_NOT_FOUND",
  "DEPENDENCY_CONFLICT",
  "DEPENDENCY_CYCLE",
  "PERMISSIONS_NOT_ACCEPTED",
  "PRICE_NOT_ACCEPTED",
  "INTEGRITY_CHECK_FAILED",
  "INVALID_STATE",
  "MODEL_PROVIDER_NOT_CONFIGURED",
  "BUDGET_EXHAUSTED",
  "UPSTREAM_FAILED",
  "INTERNAL",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** An expected failure with a stable code, a human message and optional structured details. */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "AppError";
  }
}
