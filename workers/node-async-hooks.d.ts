// The part of `node:async_hooks` the Worker uses; workerd provides it under the nodejs_compat flag. Declared
// here rather than through @types/node, whose globals (Buffer, process, timers) the Worker must not assume.
declare module "node:async_hooks" {
  export class AsyncLocalStorage<T> {
    run<R>(store: T, callback: () => R): R;
    getStore(): T | undefined;
  }
}
