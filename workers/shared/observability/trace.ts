// W3C Trace Context (https://www.w3.org/TR/trace-context/). No imports, so the Worker and the CLI (Node type
// stripping) share it.

/** One span of a trace: the ids a `traceparent` header carries. */
export interface TraceContext {
  traceId: string;
  spanId: string;
  /** The span this one continues, when it came from elsewhere. */
  parentSpanId?: string;
  sampled: boolean;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

function randomHex(bytes: number): string {
  const buffer = crypto.getRandomValues(new Uint8Array(bytes));
  let out = "";
  for (const byte of buffer) out += byte.toString(16).padStart(2, "0");
  return out;
}

/**
 * Reads a `traceparent` value; null when it is absent or invalid (the spec says to start a new trace then).
 * Version 00 has exactly four fields; later versions may append more, which are ignored.
 */
export function parseTraceparent(value: string | null | undefined): TraceContext | null {
  if (!value || value.length > 512) return null;
  const match = TRACEPARENT.exec(value.trim());
  if (!match) return null;
  const [, version, traceId, spanId, flags, rest] = match;
  if (!version || !traceId || !spanId || !flags) return null;
  if (version === "ff" || (version === "00" && rest !== undefined)) return null;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return null;
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

/** The `traceparent` header value for a span. */
export function formatTraceparent(trace: TraceContext): string {
  return `00-${trace.traceId}-${trace.spanId}-${trace.sampled ? "01" : "00"}`;
}

/** A new root span. Sampled: every hop logs, and the flag tells downstream tracers to keep it. */
export function startTrace(): TraceContext {
  return { traceId: randomHex(16), spanId: randomHex(8), sampled: true };
}

/** A span of the same trace whose parent is `parent`. */
export function childSpan(parent: TraceContext): TraceContext {
  return {
    traceId: parent.traceId,
    spanId: randomHex(8),
    parentSpanId: parent.spanId,
    sampled: parent.sampled,
  };
}

/** Continues the trace named by a `traceparent` value with a new span, or starts one when there is none. */
export function continueTrace(traceparent: string | null | undefined): TraceContext {
  const parent = parseTraceparent(traceparent);
  return parent ? childSpan(parent) : startTrace();
}
