import { z } from "zod";
import { AppError } from "../errors";

/**
 * The model gateway: one request shape, three providers configured by secrets. No model is reachable from the
 * build machines, so with nothing configured every call fails with MODEL_PROVIDER_NOT_CONFIGURED; never a
 * made-up answer. Wire formats follow each provider's documented HTTP API.
 */

export const PROVIDERS = ["workers-ai", "openai", "anthropic"] as const;
export type Provider = (typeof PROVIDERS)[number];

export const modelRequestSchema = z
  .object({
    provider: z.enum(PROVIDERS).optional(),
    model: z.string().min(1).max(200),
    system: z.string().max(100_000).optional(),
    messages: z
      .array(z.object({ role: z.enum(["user", "assistant"]), content: z.string().max(200_000) }))
      .min(1)
      .max(200),
    maxTokens: z.int().min(1).max(64_000).default(1024),
  })
  .strict();

export type ModelRequest = z.input<typeof modelRequestSchema>;

export interface ModelResponse {
  provider: Provider;
  model: string;
  text: string;
  usage: { inputTokens: number; outputTokens: number };
}

/** Secrets and vars the gateway reads; any subset may be set. */
export interface ModelGatewayEnv {
  MODEL_PROVIDER?: string;
  OPENAI_API_KEY?: string;
  OPENAI_BASE_URL?: string;
  ANTHROPIC_API_KEY?: string;
  ANTHROPIC_BASE_URL?: string;
  WORKERS_AI_ACCOUNT_ID?: string;
  WORKERS_AI_API_TOKEN?: string;
}

interface HttpCall {
  url: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

const GATEWAY_KEYS = [
  "MODEL_PROVIDER",
  "OPENAI_API_KEY",
  "OPENAI_BASE_URL",
  "ANTHROPIC_API_KEY",
  "ANTHROPIC_BASE_URL",
  "WORKERS_AI_ACCOUNT_ID",
  "WORKERS_AI_API_TOKEN",
] as const;

/** Picks the gateway's optional secrets out of a Worker env (they are set with `wrangler secret put`). */
export function modelGatewayEnv(env: object): ModelGatewayEnv {
  const source = env as Record<string, unknown>;
  const picked: ModelGatewayEnv = {};
  for (const key of GATEWAY_KEYS) {
    const value = source[key];
    if (typeof value === "string" && value.length > 0) picked[key] = value;
  }
  return picked;
}

function configured(env: ModelGatewayEnv): Provider[] {
  const list: Provider[] = [];
  if (env.WORKERS_AI_ACCOUNT_ID && env.WORKERS_AI_API_TOKEN) list.push("workers-ai");
  if (env.OPENAI_API_KEY) list.push("openai");
  if (env.ANTHROPIC_API_KEY) list.push("anthropic");
  return list;
}

/** Builds the provider's HTTP request for a gateway request (exported for wire-format tests). */
export function buildProviderCall(
  provider: Provider,
  env: ModelGatewayEnv,
  request: z.output<typeof modelRequestSchema>,
): HttpCall {
  const chat = [
    ...(request.system ? [{ role: "system", content: request.system }] : []),
    ...request.messages,
  ];
  switch (provider) {
    case "openai":
      return {
        url: `${(env.OPENAI_BASE_URL ?? "https://api.openai.com/v1").replace(/\/$/, "")}/chat/completions`,
        headers: { authorization: `Bearer ${env.OPENAI_API_KEY}`, "content-type": "application/json" },
        body: { model: request.model, messages: chat, max_tokens: request.maxTokens },
      };
    case "anthropic":
      return {
        url: `${(env.ANTHROPIC_BASE_URL ?? "https://api.anthropic.com").replace(/\/$/, "")}/v1/messages`,
        headers: {
          "x-api-key": env.ANTHROPIC_API_KEY ?? "",
          "anthropic-version": "2023-06-01",
          "content-type": "application/json",
        },
        body: {
          model: request.model,
          max_tokens: request.maxTokens,
          ...(request.system ? { system: request.system } : {}),
          messages: request.messages,
        },
      };
    case "workers-ai":
      return {
        url: `https://api.cloudflare.com/client/v4/accounts/${env.WORKERS_AI_ACCOUNT_ID}/ai/run/${request.model}`,
        headers: { authorization: `Bearer ${env.WORKERS_AI_API_TOKEN}`, "content-type": "application/json" },
        body: { messages: chat, max_tokens: request.maxTokens },
      };
  }
}

const openAiResponse = z.object({
  model: z.string().optional(),
  choices: z.array(z.object({ message: z.object({ content: z.string().nullable() }) })).min(1),
  usage: z.object({ prompt_tokens: z.int(), completion_tokens: z.int() }),
});
const anthropicResponse = z.object({
  model: z.string().optional(),
  content: z.array(z.object({ type: z.string(), text: z.string().optional() })),
  usage: z.object({ input_tokens: z.int(), output_tokens: z.int() }),
});
const workersAiResponse = z.object({
  success: z.literal(true),
  result: z.object({
    response: z.string(),
    usage: z.object({ prompt_tokens: z.int(), completion_tokens: z.int() }),
  }),
});

/** Reads a provider's response body into the gateway's shape, counting the tokens the provider reports. */
export function parseProviderResponse(provider: Provider, model: string, json: unknown): ModelResponse {
  const fail = (why: string) => new AppError("UPSTREAM_FAILED", `Unexpected ${provider} response: ${why}`);
  if (provider === "openai") {
    const r = openAiResponse.safeParse(json);
    if (!r.success) throw fail(r.error.issues[0]?.message ?? "invalid");
    return {
      provider,
      model: r.data.model ?? model,
      text: r.data.choices[0]?.message.content ?? "",
      usage: { inputTokens: r.data.usage.prompt_tokens, outputTokens: r.data.usage.completion_tokens },
    };
  }
  if (provider === "anthropic") {
    const r = anthropicResponse.safeParse(json);
    if (!r.success) throw fail(r.error.issues[0]?.message ?? "invalid");
    return {
      provider,
      model: r.data.model ?? model,
      text: r.data.content
        .filter((c) => c.type === "text")
        .map((c) => c.text ?? "")
        .join(""),
      usage: { inputTokens: r.data.usage.input_tokens, outputTokens: r.data.usage.output_tokens },
    };
  }
  const r = workersAiResponse.safeParse(json);
  if (!r.success) throw fail(r.error.issues[0]?.message ?? "invalid");
  return {
    provider,
    model,
    text: r.data.result.response,
    usage: {
      inputTokens: r.data.result.usage.prompt_tokens,
      outputTokens: r.data.result.usage.completion_tokens,
    },
  };
}

/** Calls the configured (or requested) provider. */
export async function callModel(env: ModelGatewayEnv, raw: ModelRequest): Promise<ModelResponse> {
  const parsed = modelRequestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new AppError("VALIDATION_FAILED", `Invalid model request: ${parsed.error.issues[0]?.message}`);
  }
  const request = parsed.data;
  const available = configured(env);
  const wanted = request.provider ?? (env.MODEL_PROVIDER as Provider | undefined) ?? available[0];
  if (!wanted || !available.includes(wanted)) {
    throw new AppError(
      "MODEL_PROVIDER_NOT_CONFIGURED",
      wanted
        ? `MODEL_PROVIDER_NOT_CONFIGURED: the ${wanted} provider has no credentials; set its secrets`
        : "MODEL_PROVIDER_NOT_CONFIGURED: no model provider is configured (set OPENAI_API_KEY, ANTHROPIC_API_KEY or WORKERS_AI_ACCOUNT_ID + WORKERS_AI_API_TOKEN)",
    );
  }
  const call = buildProviderCall(wanted, env, request);
  const response = await fetch(call.url, {
    method: "POST",
    headers: call.headers,
    body: JSON.stringify(call.body),
  });
  if (!response.ok) {
    throw new AppError(
      "UPSTREAM_FAILED",
      `${wanted} answered ${response.status}: ${(await response.text()).slice(0, 300)}`,
    );
  }
  return parseProviderResponse(wanted, request.model, await response.json());
}
