import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { startClickHouse } from "../scripts/clickhouse.mjs";
import { migrate } from "../scripts/clickhouse-migrate.mjs";

/** Where the Workers tests find ClickHouse; vitest.config.ts passes it to the Worker as its CLICKHOUSE_* bindings. */
export interface ClickHouseTestServer {
  url: string;
  user: string;
  password: string;
  /** Migrated once per run and shared: tests keep apart by using their own account ids. */
  database: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    clickhouse: ClickHouseTestServer;
    /** The same ClickHouse behind a proxy that can drop connections on request (see faultProxy). */
    clickhouseFaultProxy: { url: string };
  }
}

const DROP_MARKER = /drop-(\d+)-([a-z0-9]{8,64})/;

/**
 * A loopback HTTP proxy in front of ClickHouse for the connection-loss tests. A request whose URL or body
 * carries `drop-<n>-<token>` has its connection destroyed without an answer the first n times it arrives (what
 * a pooled keep-alive connection the server already closed looks like to the client), and is forwarded
 * unchanged after that. `GET /__attempts/<token>` tells how many times a token arrived. Every other request
 * is forwarded as it is.
 */
async function faultProxy(target: string): Promise<{ url: string; close: () => Promise<void> }> {
  const attempts = new Map<string, number>();
  const server: Server = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const url = request.url ?? "/";
    const asked = /^\/__attempts\/([a-z0-9]+)$/.exec(url);
    if (asked) {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ attempts: attempts.get(asked[1] as string) ?? 0 }));
      return;
    }
    const marker = DROP_MARKER.exec(`${decodeURIComponent(url)} ${body.toString("utf8")}`);
    if (marker) {
      const token = marker[2] as string;
      const seen = (attempts.get(token) ?? 0) + 1;
      attempts.set(token, seen);
      if (seen <= Number(marker[1])) {
        request.socket.destroy();
        return;
      }
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(request.headers)) {
      if (typeof value === "string" && !["host", "connection", "content-length"].includes(name))
        headers.set(name, value);
    }
    try {
      const answer = await fetch(`${target}${url}`, {
        method: request.method,
        headers,
        body: ["GET", "HEAD"].includes(request.method ?? "GET") ? undefined : body,
      });
      const out = Buffer.from(await answer.arrayBuffer());
      const outHeaders: Record<string, string> = {};
      answer.headers.forEach((value, name) => {
        if (!["content-length", "content-encoding", "transfer-encoding", "connection"].includes(name))
          outHeaders[name] = value;
      });
      response.writeHead(answer.status, outHeaders);
      response.end(out);
    } catch (error) {
      response.writeHead(502, { "content-type": "text/plain" });
      response.end(String(error));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Node side of the Workers tests: one ClickHouse for the whole run, on a free port with its data in a
 * temporary folder, migrated once. CLICKHOUSE_TEST_URL (with CLICKHOUSE_TEST_USER and
 * CLICKHOUSE_TEST_PASSWORD) runs the tests against another server instead, e.g. a current ClickHouse.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.CLICKHOUSE_TEST_URL;
  if (external) {
    const server: ClickHouseTestServer = {
      url: external.replace(/\/+$/, ""),
      user: process.env.CLICKHOUSE_TEST_USER || "default",
      password: process.env.CLICKHOUSE_TEST_PASSWORD ?? "",
      database: "soma",
    };
    await migrate(server);
    project.provide("clickhouse", server);
    const proxy = await faultProxy(server.url);
    project.provide("clickhouseFaultProxy", { url: proxy.url });
    return proxy.close;
  }

  const stateDir = await mkdtemp(path.join(tmpdir(), "soma-test-clickhouse-"));
  const cleanUp = async (stop?: () => Promise<boolean>) => {
    await stop?.();
    await rm(stateDir, { recursive: true, force: true });
  };
  let running: Awaited<ReturnType<typeof startClickHouse>>;
  try {
    running = await startClickHouse({ stateDir });
  } catch (error) {
    await cleanUp();
    throw error;
  }
  const server: ClickHouseTestServer = { url: running.url, user: "default", password: "", database: "soma" };
  try {
    await migrate(server);
  } catch (error) {
    await cleanUp(running.stop);
    throw error;
  }
  project.provide("clickhouse", server);
  const proxy = await faultProxy(server.url);
  project.provide("clickhouseFaultProxy", { url: proxy.url });
  return async () => {
    await proxy.close();
    await cleanUp(running.stop);
  };
}
