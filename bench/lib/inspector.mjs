import { createServer } from "node:net";

/** A free loopback port (for the Worker's V8 inspector). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Sessions on every isolate workerd's V8 inspector lists at `port` (the Worker's own, and Miniflare's D1, R2,
 * Queues and cache workers), each with `call(method, params)` over the DevTools protocol.
 */
export async function inspectIsolates(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const sessions = [];
  for (const target of targets) {
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("error", reject, { once: true });
    });
    let nextId = 0;
    const waiting = new Map();
    socket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.id && waiting.has(data.id)) {
        waiting.get(data.id)(data);
        waiting.delete(data.id);
      }
    });
    sessions.push({
      name: (target.title ?? target.id).replace(/^workerd: worker /, ""),
      call: (method, params = {}) =>
        new Promise((resolve) => {
          const id = ++nextId;
          waiting.set(id, resolve);
          socket.send(JSON.stringify({ id, method, params }));
        }),
      close: () => socket.close(),
    });
  }
  return sessions;
}

/** Used JS heap per isolate in MiB (`Runtime.getHeapUsage`), by isolate name. */
export async function heapUsage(sessions) {
  const out = {};
  await Promise.all(
    sessions.map(async (s) => {
      const answer = await s.call("Runtime.getHeapUsage");
      if (answer.result) out[s.name] = answer.result.usedSize / 2 ** 20;
    }),
  );
  return out;
}
