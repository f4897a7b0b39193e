import { describe, expect, it } from "vitest";
import {
  buildProviderCall,
  callModel,
  modelRequestSchema,
  parseProviderResponse,
} from "../../workers/shared/agents/model-gateway";
import { AppError } from "../../workers/shared/errors";

// No model provider is reachable from the build machines: the wire format is checked against each provider's
// documented request and response examples, and the unconfigured path against the error it must raise.

const request = modelRequestSchema.parse({
  model: "test-model",
  system: "You are terse.",
  messages: [{ role: "user", content: "Hello" }],
  maxTokens: 64,
});

describe("model gateway wire formats", () => {
  it("builds an OpenAI chat completions request", () => {
    const call = buildProviderCall("openai", { OPENAI_API_KEY: "sk-test" }, request);
    expect(call.url).toBe("https://api.openai.com/v1/chat/completions");
    expect(call.headers.authorization).toBe("Bearer sk-test");
    expect(call.body).toEqual({
      model: "test-model",
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Hello" },
      ],
      max_tokens: 64,
    });
  });

  it("uses an OpenAI-compatible base URL when configured", () => {
    const call = buildProviderCall(
      "openai",
      { OPENAI_API_KEY: "k", OPENAI_BASE_URL: "http://127.0.0.1:11434/v1/" },
      request,
    );
    expect(call.url).toBe("http://127.0.0.1:11434/v1/chat/completions");
  });

  it("reads the documented OpenAI response, counting the reported tokens", () => {
    const documented = {
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
    expect(parseProviderResponse("openai", "x", documented)).toEqual({
      provider: "openai",
      model: "gpt-4o-mini",
      text: "Hello there, how may I assist you today?",
      usage: { inputTokens: 9, outputTokens: 12 },
    });
  });

  it("builds an Anthropic messages request with the system prompt apart", () => {
    const call = buildProviderCall("anthropic", { ANTHROPIC_API_KEY: "ant-test" }, request);
    expect(call.url).toBe("https://api.anthropic.com/v1/messages");
    expect(call.headers).toMatchObject({ "x-api-key": "ant-test", "anthropic-version": "2023-06-01" });
    expect(call.body).toEqual({
      model: "test-model",
      max_tokens: 64,
      system: "You are terse.",
      messages: [{ role: "user", content: "Hello" }],
    });
  });

  it("reads the documented Anthropic response", () => {
    const documented = {
      id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
      type: "message",
      role: "assistant",
      content: [{ type: "text", text: "Hi! My name is Claude." }],
      model: "claude-3-5-sonnet-20241022",
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: 25 },
    };
    expect(parseProviderResponse("anthropic", "x", documented)).toMatchObject({
      text: "Hi! My name is Claude.",
      usage: { inputTokens: 10, outputTokens: 25 },
    });
  });

  it("builds and reads the Workers AI REST format", () => {
    const call = buildProviderCall(
      "workers-ai",
      { WORKERS_AI_ACCOUNT_ID: "acct", WORKERS_AI_API_TOKEN: "tok" },
      {
        ...request,
        model: "@cf/meta/llama-3.1-8b-instruct",
      },
    );
    expect(call.url).toBe(
      "https://api.cloudflare.com/client/v4/accounts/acct/ai/run/@cf/meta/llama-3.1-8b-instruct",
    );
    const documented = {
      result: {
        response: "Hello, World",
        usage: { prompt_tokens: 14, completion_tokens: 4, total_tokens: 18 },
      },
      success: true,
      errors: [],
      messages: [],
    };
    expect(parseProviderResponse("workers-ai", "@cf/meta/llama-3.1-8b-instruct", documented)).toMatchObject({
      text: "Hello, World",
      usage: { inputTokens: 14, outputTokens: 4 },
    });
  });

  it("refuses a response without usage rather than guessing tokens", () => {
    expect(() => parseProviderResponse("openai", "x", { choices: [{ message: { content: "hi" } }] })).toThrow(
      AppError,
    );
  });
});

describe("an unconfigured gateway", () => {
  it("fails with MODEL_PROVIDER_NOT_CONFIGURED and never answers", async () => {
    const error = await callModel({}, { model: "any", messages: [{ role: "user", content: "hi" }] }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe("MODEL_PROVIDER_NOT_CONFIGURED");
  });

  it("fails the same way when a provider without credentials is asked for", async () => {
    const error = await callModel(
      { OPENAI_API_KEY: "k" },
      { provider: "anthropic", model: "m", messages: [{ role: "user", content: "x" }] },
    ).catch((e: unknown) => e);
    expect((error as AppError).code).toBe("MODEL_PROVIDER_NOT_CONFIGURED");
    expect((error as AppError).message).toContain("anthropic");
  });
});
