import { validator } from "hono/validator";
import type { ZodType, z } from "zod";
import { AppError } from "../shared/errors";

/** Turns zod issues into the details every validation error carries: where, and what is wrong. */
export function issuesToDetails(error: z.ZodError): { issues: { path: string; message: string }[] } {
  return {
    issues: error.issues.map((issue) => ({
      path: issue.path.map(String).join(".") || "(root)",
      message: issue.message,
    })),
  };
}

/** Parses a value with a schema or throws VALIDATION_FAILED naming the first offending field. */
export function parseOrThrow<T extends ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const details = issuesToDetails(result.error);
    const first = details.issues[0];
    throw new AppError(
      "VALIDATION_FAILED",
      first ? `Invalid ${what}: ${first.path}: ${first.message}` : `Invalid ${what}`,
      details,
    );
  }
  return result.data;
}

/** JSON body validation hook: every bad body fails the same way. */
export const jsonBody = <T extends ZodType>(schema: T) =>
  validator("json", (value, c) => {
    if (!/^application\/([\w.-]+\+)?json\b/i.test(c.req.header("content-type") ?? "")) {
      throw new AppError(
        "UNSUPPORTED_MEDIA_TYPE",
        "Send the body as JSON with Content-Type: application/json",
      );
    }
    return parseOrThrow(schema, value, "request body");
  });

/** Like `jsonBody`, for a body that may be left out entirely: no body and no Content-Type parse as `{}`. */
export const optionalJsonBody = <T extends ZodType>(schema: T) =>
  validator("json", (value, c) => {
    const contentType = c.req.header("content-type");
    if (!contentType && !c.req.raw.body) return parseOrThrow(schema, {}, "request body");
    if (!/^application\/([\w.-]+\+)?json\b/i.test(contentType ?? "")) {
      throw new AppError(
        "UNSUPPORTED_MEDIA_TYPE",
        "Send the body as JSON with Content-Type: application/json",
      );
    }
    return parseOrThrow(schema, value, "request body");
  });

/** Percent-decodes a raw path tail; a malformed escape (a bare "%", "%ff") is bad input, never a crash. */
export function decodePathTail(raw: string, what: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new AppError("VALIDATION_FAILED", `Invalid path: ${what}: not valid percent-encoding`, {
      issues: [{ path: what, message: "not valid percent-encoding" }],
    });
  }
}

/** Query string validation hook. */
export const queryParams = <T extends ZodType>(schema: T) =>
  validator("query", (value) => parseOrThrow(schema, value, "query"));

/** Path parameter validation hook. */
export const pathParams = <T extends ZodType>(schema: T) =>
  validator("param", (value) => parseOrThrow(schema, value, "path"));
