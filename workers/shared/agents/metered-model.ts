import { newId } from "../db/client";
import { AppError } from "../errors";
import { coordinator } from "../kamachiq/coordinator-client";
import type { CapsuleHostProps } from "./capabilities";
import { callModel, type ModelRequest, type ModelResponse, modelGatewayEnv } from "./model-gateway";

/**
 * A sandboxed capsule's model call (ctx.llm), metered into its attempt. The coordinator says how many of the
 * attempt's reserved tokens are left, the answer is capped to them, and the tokens the provider reports are
 * recorded before the capsule sees the answer: the capsule cannot skip or alter the count, and settlement adds
 * it to the attempt's usage, so it reaches the budget, the account's reservation, billing and the usage event.
 */
export async function meteredModelCall(
  env: { PROJECT_COORDINATOR: DurableObjectNamespace },
  props: CapsuleHostProps,
  request: ModelRequest,
): Promise<ModelResponse> {
  const project = coordinator(env, props.projectId);
  const allowance = await project.modelAllowance(props.attemptId);
  if (!allowance.ok) throw new AppError("INVALID_STATE", allowance.message);
  const left = allowance.value.remainingTokens;
  if (left <= 0) {
    throw new AppError(
      "BUDGET_EXHAUSTED",
      `TOKEN_BUDGET_EXCEEDED: the attempt's model calls used all of its ${props.capsule} reservation`,
    );
  }
  const response = await callModel(modelGatewayEnv(env), {
    ...request,
    maxTokens: Math.max(1, Math.min(request.maxTokens ?? 1024, left, 64_000)),
  });
  const recorded = await project.recordModelCall(props.attemptId, {
    id: newId("mdl"),
    capsule: props.capsule,
    provider: response.provider,
    model: response.model,
    inputTokens: response.usage.inputTokens,
    outputTokens: response.usage.outputTokens,
  });
  if (!recorded.ok)
    throw new AppError("INTERNAL", `The model call could not be metered: ${recorded.message}`);
  return response;
}
