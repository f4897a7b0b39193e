import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** A real HTTP server on 127.0.0.1 (also reachable as localhost) for capsule egress tests. */
    egressServer: { port: number };
  }
}

/**
 * The Node side of the egress tests: `/redirect?to=<url>&status=<3xx>` answers a redirect, `/hello` answers and
 * counts its requests, `/hits` tells the count. One server under two host names lets a test tell a declared
 * host (127.0.0.1) from an undeclared one (localhost).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let hits = 0;
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://fixture");
    if (url.pathname === "/redirect") {
      response.writeHead(Number(url.searchParams.get("status") ?? "302"), {
        location: url.searchParams.get("to") ?? "/",
      });
      response.end();
    } else if (url.pathname === "/hello") {
      hits += 1;
      response.writeHead(200, { "content-type": "text/plain" });
      response.end(`hello ${request.method}`);
    } else if (url.pathname === "/hits") {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ hits }));
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  project.provide("egressServer", { port: (server.address() as AddressInfo).port });
  return async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}
