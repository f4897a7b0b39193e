import { AsyncLocalStorage } from "node:async_hooks";

/**
 * The `traceparent` of the unit of work running now (an API request), for code that records events without
 * a request at hand: the outbox events a route writes carry the request's trace to the analytics consumer.
 */
const scope = new AsyncLocalStorage<string>();

/** Runs `fn` with `traceparent` as the current trace. */
export function withTraceparent<T>(traceparent: string, fn: () => T): T {
  return scope.run(traceparent, fn);
}

/** The current unit of work's `traceparent`, if it has one. */
export function currentTraceparent(): string | undefined {
  return scope.getStore();
}
