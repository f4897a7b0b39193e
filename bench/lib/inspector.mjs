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
    const listeners = new Map();
    socket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.id && waiting.has(data.id)) {
        waiting.get(data.id)(data);
        waiting.delete(data.id);
      } else if (data.method) {
        listeners.get(data.method)?.(data.params);
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
      /** Calls `listener(params)` for each protocol event `method` (one listener per method). */
      on: (method, listener) => listeners.set(method, listener),
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

/** A heap snapshot of one isolate (the DevTools `.heapsnapshot` JSON text). V8 collects all garbage first. */
export async function heapSnapshot(session) {
  const chunks = [];
  session.on("HeapProfiler.addHeapSnapshotChunk", ({ chunk }) => chunks.push(chunk));
  await session.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  session.on("HeapProfiler.addHeapSnapshotChunk", () => {});
  return chunks.join("");
}

/**
 * Retained JS heap per isolate in MiB: the used heap right after a heap snapshot, which V8 takes only after a
 * full garbage collection, so what remains is what JavaScript objects keep alive. (workerd's inspector answers
 * `HeapProfiler.collectGarbage` for the Worker's isolate only; a snapshot works on every one.) One isolate at
 * a time: each snapshot pauses its isolate for as long as it takes.
 */
export async function retainedHeap(sessions) {
  const out = {};
  for (const s of sessions) {
    await heapSnapshot(s);
    const answer = await s.call("Runtime.getHeapUsage");
    if (answer.result) out[s.name] = answer.result.usedSize / 2 ** 20;
  }
  return out;
}

/** Self size (MiB) and count of a heap snapshot's objects, grouped by constructor or node name, largest first. */
export function snapshotSummary(text, top = 25) {
  const snapshot = JSON.parse(text);
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const at = (name) => fields.indexOf(name);
  const [typeAt, nameAt, sizeAt] = [at("type"), at("name"), at("self_size")];
  const groups = new Map();
  for (let i = 0; i < snapshot.nodes.length; i += width) {
    const key = `${types[snapshot.nodes[i + typeAt]]}:${snapshot.strings[snapshot.nodes[i + nameAt]].slice(0, 60)}`;
    const group = groups.get(key) ?? { key, count: 0, bytes: 0 };
    group.count++;
    group.bytes += snapshot.nodes[i + sizeAt];
    groups.set(key, group);
  }
  return [...groups.values()]
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, top)
    .map((g) => ({ ...g, mib: g.bytes / 2 ** 20 }));
}
