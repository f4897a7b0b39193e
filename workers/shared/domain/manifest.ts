import semver from "semver";
import { z } from "zod";

/** Account handles: 2-39 lowercase letters, digits and inner hyphens (they become capsule namespaces). */
export const HANDLE_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,37}[a-z0-9])$/;
/** Capsule names: `<handle>/<name>`. */
export const CAPSULE_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,37}[a-z0-9])\/[a-z0-9][a-z0-9._-]{0,63}$/;

export const CATEGORIES = [
  "Code",
  "Data",
  "Testing",
  "Documentation",
  "DevOps",
  "Security",
  "Research",
  "Writing",
  "Planning",
  "Review",
  "Other",
] as const;

export const RUNTIMES = ["worker", "prompt", "runner", "planner"] as const;
export const PRICING_MODELS = ["free", "per_execution", "per_1k_tokens"] as const;

/**
 * Capabilities a capsule may ask for. Egress is per host: `network.egress:api.example.com` or a wildcard
 * subdomain `network.egress:*.example.com`. Anything else is refused at run time.
 */
export const BASE_PERMISSIONS = [
  "artifacts.read",
  "artifacts.write",
  "llm",
  "logging",
  "runner.exec",
] as const;
const EGRESS_PATTERN =
  /^network\.egress:(\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

export const capsuleNameSchema = z
  .string()
  .regex(CAPSULE_NAME_PATTERN, "must be <handle>/<name> in lowercase letters, digits, '.', '_' or '-'");

export const semverSchema = z
  .string()
  .refine((v) => semver.valid(v) === v, "must be a semantic version such as 1.2.3 (no 'v' prefix)");

export const semverRangeSchema = z
  .string()
  .min(1)
  .max(256)
  .refine((r) => semver.validRange(r) !== null, "must be a semver range such as ^1.2.0");

export const permissionSchema = z
  .string()
  .refine(
    (p) => (BASE_PERMISSIONS as readonly string[]).includes(p) || EGRESS_PATTERN.test(p),
    `must be one of ${BASE_PERMISSIONS.join(", ")} or network.egress:<host>`,
  );

const relativePath = z
  .string()
  .min(1)
  .max(255)
  .refine(
    (p) => !p.startsWith("/") && !p.split("/").includes(".."),
    "must be a relative path inside the bundle",
  );

const jsonSchemaObject = z.record(z.string(), z.unknown());

export const manifestSchema = z
  .object({
    apiVersion: z.literal("soma.dev/v1"),
    kind: z.literal("TaskCapsule"),
    metadata: z
      .object({
        name: capsuleNameSchema,
        version: semverSchema,
        category: z.enum(CATEGORIES),
        tags: z
          .array(z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, "tags are lowercase slugs"))
          .max(10)
          .default([]),
        license: z.string().min(1).max(64),
        displayName: z.string().min(1).max(80).optional(),
        homepage: z.url().optional(),
      })
      .strict(),
    spec: z
      .object({
        description: z.string().min(1).max(4000),
        runtime: z.enum(RUNTIMES),
        entrypoint: relativePath,
        permissions: z
          .array(permissionSchema)
          .max(32)
          .default([])
          .refine((list) => new Set(list).size === list.length, "permissions must not repeat"),
        dependencies: z.record(capsuleNameSchema, semverRangeSchema).default({}),
        tokenEstimate: z
          .object({ planning: z.int().min(0).max(10_000_000), execution: z.int().min(0).max(10_000_000) })
          .strict()
          .default({ planning: 0, execution: 0 }),
        inputs: jsonSchemaObject.default({ type: "object" }),
        outputs: jsonSchemaObject.default({ type: "object" }),
        pricing: z
          .object({ model: z.enum(PRICING_MODELS), amountUsd: z.number().min(0).max(10_000) })
          .strict()
          .refine((p) => (p.model === "free") === (p.amountUsd === 0), {
            message: "free capsules cost 0; priced capsules need amountUsd > 0",
            path: ["amountUsd"],
          })
          .default({ model: "free", amountUsd: 0 }),
      })
      .strict(),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.spec.dependencies[m.metadata.name] !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["spec", "dependencies", m.metadata.name],
        message: "a capsule cannot depend on itself",
      });
    }
  });

export type CapsuleManifest = z.output<typeof manifestSchema>;

/** The JSON Schema of capsule.yaml, published at /v1/schemas/capsule.json. */
export function manifestJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(manifestSchema, { io: "input", unrepresentable: "any" }),
    $id: "https://soma.dev/schemas/capsule.json",
    title: "Task Capsule manifest (capsule.yaml)",
  };
}

/** The namespace (owner handle) of a capsule name. */
export function namespaceOf(name: string): string {
  return name.slice(0, name.indexOf("/"));
}
