import { z } from "zod";
import { capsuleNameSchema, permissionSchema, semverRangeSchema } from "../domain/manifest";
import { acceptedPriceSchema } from "../marketplace/price-acceptance";

/** `ns/name@range` (range defaults to `*`). */
export const capsuleRefSchema = z
  .string()
  .max(300)
  .transform((ref, ctx) => {
    const at = ref.indexOf("@");
    const name = at === -1 ? ref : ref.slice(0, at);
    const range = at === -1 ? "*" : ref.slice(at + 1);
    if (!capsuleNameSchema.safeParse(name).success) {
      ctx.addIssue({ code: "custom", message: `"${name}" is not a capsule name (ns/name)` });
      return z.NEVER;
    }
    if (!semverRangeSchema.safeParse(range).success) {
      ctx.addIssue({ code: "custom", message: `"${range}" is not a semver range` });
      return z.NEVER;
    }
    return { name, range };
  });

export const TASK_ID_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

export const taskSpecSchema = z
  .object({
    id: z.string().regex(TASK_ID_PATTERN, "task ids are 1-64 lowercase letters, digits, '_', '.' or '-'"),
    capsule: capsuleRefSchema,
    inputs: z.record(z.string(), z.unknown()).default({}),
    dependsOn: z.array(z.string()).max(500).default([]),
    tokenEstimate: z.int().min(0).max(10_000_000).optional(),
    successCriteria: z.array(z.string().min(1).max(500)).max(50).default([]),
  })
  .strict();

export type TaskSpec = z.output<typeof taskSpecSchema>;

export const MAX_TASKS = 2000;

export const taskGraphSchema = z.array(taskSpecSchema).min(1).max(MAX_TASKS);

export const projectSpecSchema = z.union([
  z
    .object({
      planner: capsuleRefSchema,
      inputs: z.record(z.string(), z.unknown()).default({}),
      acceptPermissions: z.array(permissionSchema).max(64).default([]),
      reviewer: capsuleRefSchema.optional(),
    })
    .strict(),
  z
    .object({
      tasks: taskGraphSchema,
      acceptPermissions: z.array(permissionSchema).max(64).default([]),
      reviewer: capsuleRefSchema.optional(),
    })
    .strict(),
]);

export const createProjectSchema = z
  .object({
    name: z.string().min(1).max(200),
    spec: projectSpecSchema,
    budget: z.object({ tokens: z.int().min(1).max(10_000_000_000) }).strict(),
    maxParallelAgents: z.int().min(1).max(100).default(10),
    qualityThreshold: z.number().min(0).max(1).default(0.8),
    autoRemediations: z.int().min(0).max(2).default(2),
    /** The most the project may spend on paid capsules and model tokens, enforced before each dispatch. */
    maxSpendUsd: z.number().positive().max(1_000_000).optional(),
    /** Prices accepted for the paid capsules the project runs (not needed for those installed at that price). */
    acceptPrices: z.array(acceptedPriceSchema).max(100).default([]),
  })
  .strict();

export type CreateProjectInput = z.output<typeof createProjectSchema>;

/** What a planner capsule must return. */
export const plannerOutputSchema = z.object({ tasks: taskGraphSchema }).passthrough();

/** The quality gate's verdict, produced by the reviewer capsule. */
export const gateResultSchema = z
  .object({
    scores: z.object({
      completeness: z.number().min(0).max(1),
      correctness: z.number().min(0).max(1),
      style: z.number().min(0).max(1),
      documentation: z.number().min(0).max(1),
    }),
    feedback: z.string().max(20_000).default(""),
  })
  .passthrough();

export type GateResult = z.output<typeof gateResultSchema>;

/** The rubric: weights of each sub-score in the gate score. */
export const RUBRIC = { completeness: 0.3, correctness: 0.4, style: 0.15, documentation: 0.15 } as const;

export function gateScore(scores: GateResult["scores"]): number {
  const total =
    scores.completeness * RUBRIC.completeness +
    scores.correctness * RUBRIC.correctness +
    scores.style * RUBRIC.style +
    scores.documentation * RUBRIC.documentation;
  return Math.round(total * 1000) / 1000;
}
