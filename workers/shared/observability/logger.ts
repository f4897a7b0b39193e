// Structured logs: one JSON object per line. No imports, so the Worker, the Durable Objects and the CLI runner
// (Node type stripping) write the same shape, and Workers Logs, Logpush or any log shipper can index it.

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;

/** Where a finished line goes; the console by default (Workers Logs collect it), a buffer in tests. */
export type LogSink = (level: LogLevel, line: string) => void;

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

// Configuration, not state: set from the LOG_LEVEL var when the Worker or a Durable Object starts handling work.
let defaultLevel: LogLevel = "info";

/** Sets the level of loggers made without one; an unknown or missing value leaves `info`. */
export function setDefaultLogLevel(level: string | undefined): void {
  defaultLevel = level && Object.hasOwn(RANK, level) ? (level as LogLevel) : "info";
}

const consoleSink: LogSink = (level, line) => {
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
};

/** Correlation fields every line carries, null when the unit of work has none. */
interface Correlation {
  requestId: string | null;
  traceId: string | null;
  spanId: string | null;
}

function serialise(value: unknown): unknown {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, ...(value.stack ? { stack: value.stack } : {}) };
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * A logger bound to one unit of work (a request, a queue message, a Durable Object call, a runner job).
 * `child` adds fields; every line has `time`, `level`, `msg`, `requestId`, `traceId` and `spanId`.
 */
export class Logger {
  readonly fields: LogFields;
  private readonly sink: LogSink;
  private readonly minRank: number;

  constructor(fields: LogFields = {}, options: { sink?: LogSink; level?: LogLevel } = {}) {
    this.fields = fields;
    this.sink = options.sink ?? consoleSink;
    this.minRank = RANK[options.level ?? defaultLevel];
  }

  /** The same logger with more fields (later fields win). */
  child(fields: LogFields): Logger {
    return new Logger({ ...this.fields, ...fields }, { sink: this.sink, level: levelOf(this.minRank) });
  }

  debug(msg: string, fields?: LogFields): void {
    this.write("debug", msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    this.write("info", msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.write("warn", msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    this.write("error", msg, fields);
  }

  private write(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (RANK[level] < this.minRank) return;
    const correlation: Correlation = { requestId: null, traceId: null, spanId: null };
    const record = { time: new Date().toISOString(), level, msg, ...correlation, ...this.fields, ...fields };
    let line: string;
    try {
      line = JSON.stringify(record, (_key, value: unknown) => serialise(value));
    } catch {
      // A field that cannot be serialised (a cycle) must not lose the line itself.
      const flat: LogFields = {};
      for (const [key, value] of Object.entries(record)) {
        flat[key] = typeof value === "object" && value !== null ? String(value) : serialise(value);
      }
      line = JSON.stringify(flat);
    }
    this.sink(level, line);
  }
}

function levelOf(rank: number): LogLevel {
  return (Object.keys(RANK) as LogLevel[]).find((level) => RANK[level] === rank) ?? "debug";
}

/** Fields that tie a line to a trace: given to every logger of a traced unit of work. */
export function traceFields(trace: { traceId: string; spanId: string; parentSpanId?: string }): LogFields {
  return {
    traceId: trace.traceId,
    spanId: trace.spanId,
    ...(trace.parentSpanId ? { parentSpanId: trace.parentSpanId } : {}),
  };
}
