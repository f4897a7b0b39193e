import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestProject } from "vitest/node";

/** An OpenAI-compatible endpoint on this machine: the Workers tests' only model provider. */
export interface ModelProviderTestServer {
  /** The base URL to configure as OPENAI_BASE_URL. */
  baseUrl: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    modelProvider: ModelProviderTestServer;
  }
}

/**
 * The documented chat completions answer (platform.openai.com/docs/api-reference/chat/object), usage included.
 * No real model is reachable from the build machines; this serves the same wire format over real HTTP, so the
 * gateway's request, its parsing of the answer and the metering behind it run as in production.
 */
const DOCUMENTED_ANSWER = {
  id: "chatcmpl-123",
  object: "chat.completion",
  created: 1677652288,
  model: "gpt-4o-mini",
  choices: [
    {
      index: 0,
      message: { role: "assistant", content: "Hello there, how may I assist you today?" },
      finish_reason: "stop",
    },
  ],
  usage: { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21 },
};

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const authorized = request.headers.authorization?.startsWith("Bearer ") ?? false;
      let body: { model?: unknown; messages?: unknown } = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof body;
      } catch {
        // answered as a bad request below
      }
      const valid = typeof body.model === "string" && Array.isArray(body.messages);
      const send = (status: number, answer: unknown) => {
        response.writeHead(status, { "content-type": "application/json" });
        response.end(JSON.stringify(answer));
      };
      if (request.method !== "POST" || request.url !== "/v1/chat/completions") {
        send(404, { error: { message: "not found" } });
      } else if (!authorized) {
        send(401, { error: { message: "missing bearer token" } });
      } else if (!valid) {
        send(400, { error: { message: "not a chat completions request" } });
      } else {
        send(200, DOCUMENTED_ANSWER);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  project.provide("modelProvider", { baseUrl: `http://127.0.0.1:${port}/v1` });
  return async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}
