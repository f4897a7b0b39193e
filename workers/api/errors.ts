import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ErrorCode } from "../shared/errors";

/** The one mapping from error code to HTTP status. */
export const STATUS_BY_CODE: Record<ErrorCode, ContentfulStatusCode> = {
  BAD_REQUEST: 400,
  VALIDATION_FAILED: 400,
  INVALID_BUNDLE: 422,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  DEPENDENCY_NOT_FOUND: 422,
  DEPENDENCY_CONFLICT: 409,
  DEPENDENCY_CYCLE: 422,
  PERMISSIONS_NOT_ACCEPTED: 422,
  PRICE_NOT_ACCEPTED: 422,
  INTEGRITY_CHECK_FAILED: 502,
  INVALID_STATE: 409,
  MODEL_PROVIDER_NOT_CONFIGURED: 503,
  BUDGET_EXHAUSTED: 402,
  UPSTREAM_FAILED: 502,
  INTERNAL: 500,
};

export interface ErrorBody {
  error: { code: ErrorCode; message: string; requestId: string; details?: unknown };
}
