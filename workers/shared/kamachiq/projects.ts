import { and, desc, eq } from "drizzle-orm";
import type { Principal } from "../auth/principal";
import { type Database, nowIso } from "../db/client";
import { projects, reviewTasks } from "../db/schema";
import type { CapsuleManifest } from "../domain/manifest";
import { resolveDependencies } from "../domain/resolve";
import { AppError } from "../errors";
import { requireAcceptedPrices } from "../marketplace/price-acceptance";
import { d1VersionSource } from "../marketplace/version-source";
import { type CoordinatorApi, coordinator } from "./coordinator-client";
import { planTasks } from "./planning";
import { type CreateProjectInput, capsuleRefSchema } from "./spec";
import type { CoordinatorResult, ProjectSnapshot } from "./types";

interface ProjectEnv {
  DB: D1Database;
  PROJECT_COORDINATOR: DurableObjectNamespace;
  DEFAULT_REVIEWER: string;
}

/** Unwraps a coordinator result, turning expected refusals back into AppErrors. */
export function unwrap<T>(result: CoordinatorResult<T>): T {
  if (result.ok) return result.value;
  const code = ["NOT_FOUND", "INVALID_STATE", "VALIDATION_FAILED", "FORBIDDEN"].includes(result.code)
    ? (result.code as "NOT_FOUND")
    : "INTERNAL";
  throw new AppError(code, result.message, result.details);
}

async function pinReviewer(db: Database, ref: { name: string; range: string }) {
  const { source, rows } = d1VersionSource(db);
  try {
    const resolution = await resolveDependencies(ref.name, ref.range, source);
    const manifest = rows.get(`${ref.name}@${resolution.root.version}`)!
      .manifest as unknown as CapsuleManifest;
    if (manifest.spec.runtime !== "worker") {
      throw new AppError("VALIDATION_FAILED", `The reviewer ${ref.name} must be a worker capsule`, {
        path: "spec.reviewer",
      });
    }
    return {
      capsule: ref.name,
      version: resolution.root.version,
      tokenEstimate: manifest.spec.tokenEstimate.planning + manifest.spec.tokenEstimate.execution,
    };
  } catch (error) {
    if (error instanceof AppError && error.code !== "VALIDATION_FAILED") {
      throw new AppError(
        "VALIDATION_FAILED",
        `The quality reviewer ${ref.name}@${ref.range} is not installable: ${error.message}`,
        {
          path: "spec.reviewer",
        },
      );
    }
    throw error;
  }
}

/**
 * Validates a project (graph or planner, capsules installable, permissions accepted, reviewer available) and
 * starts its coordinator. Nothing is created when validation fails.
 */
export async function createProject(
  env: ProjectEnv,
  db: Database,
  owner: Principal & { accountId: string; handle: string },
  input: CreateProjectInput,
  /** The request's W3C traceparent, continued by the project's agents, runner jobs and events. */
  traceparent?: string,
): Promise<ProjectSnapshot> {
  const reviewerRef = input.spec.reviewer ?? capsuleRefSchema.parse(env.DEFAULT_REVIEWER);
  const reviewer = await pinReviewer(db, reviewerRef);
  const accept = input.spec.acceptPermissions;
  let tasks: Awaited<ReturnType<typeof planTasks>>;
  let planning = false;
  if ("tasks" in input.spec) {
    tasks = (await planTasks(db, input.spec.tasks, accept)).map((t) => ({
      ...t,
      tokenEstimate: t.tokenEstimate + reviewer.tokenEstimate,
    }));
  } else {
    planning = true;
    tasks = await planTasks(
      db,
      [
        {
          id: "plan",
          capsule: input.spec.planner,
          inputs: input.spec.inputs,
          dependsOn: [],
          successCriteria: [],
        },
      ],
      accept,
    );
    if (tasks[0]?.runtime !== "planner") {
      throw new AppError("VALIDATION_FAILED", `${input.spec.planner.name} is not a planner capsule`, {
        path: "spec.planner",
      });
    }
  }
  await requireAcceptedPrices(
    db,
    owner.accountId,
    tasks.map((t) => ({
      task: t.id,
      capsule: t.capsule,
      price: t.price ?? { model: "free", amountMicroUsd: 0 },
    })),
    input.acceptPrices,
  );
  const id = env.PROJECT_COORDINATOR.newUniqueId().toString();
  const snapshot = unwrap(
    await coordinator(env, id).create({
      id,
      ...(traceparent ? { traceparent } : {}),
      name: input.name,
      ownerId: owner.accountId,
      ownerHandle: owner.handle,
      limitTokens: input.budget.tokens,
      maxParallelAgents: input.maxParallelAgents,
      qualityThreshold: input.qualityThreshold,
      autoRemediations: input.autoRemediations,
      acceptPermissions: accept,
      acceptPrices: input.acceptPrices,
      reviewer,
      maxSpendMicroUsd: input.maxSpendUsd === undefined ? null : Math.round(input.maxSpendUsd * 1_000_000),
      planning,
      tasks,
    }),
  );
  await db
    .insert(projects)
    .values({
      id,
      ownerId: owner.accountId,
      name: input.name,
      status: snapshot.status,
      createdAt: snapshot.createdAt,
      updatedAt: nowIso(),
    })
    .onConflictDoNothing();
  return snapshot;
}

/**
 * The caller's coordinator stub for a project. Owners, reviewers and admins may see it (and decide gated tasks);
 * only the owner or an admin may `manage` it (cancel it, change its budget): a reviewer judges work, never
 * spends or stops someone else's money.
 */
/**
 * Project owners this isolate has looked up. A project's owner never changes and projects are never deleted,
 * so a found owner stays right; unknown ids are not remembered (the project may be created next). Bounded.
 */
const owners = new Map<string, string>();
const MAX_CACHED_OWNERS = 10_000;

async function projectOwner(db: Database, projectId: string): Promise<string | undefined> {
  const known = owners.get(projectId);
  if (known !== undefined) return known;
  const [row] = await db
    .select({ ownerId: projects.ownerId })
    .from(projects)
    .where(eq(projects.id, projectId))
    .limit(1);
  if (!row) return undefined;
  if (owners.size >= MAX_CACHED_OWNERS) {
    const oldest = owners.keys().next();
    if (!oldest.done) owners.delete(oldest.value);
  }
  owners.set(projectId, row.ownerId);
  return row.ownerId;
}

export async function projectFor(
  env: ProjectEnv,
  db: Database,
  principal: Principal,
  projectId: string,
  access: "view" | "manage" = "view",
): Promise<CoordinatorApi> {
  const ownerId = await projectOwner(db, projectId);
  const owner = ownerId !== undefined && ownerId === principal.accountId;
  const admin = principal.roles.includes("admin");
  const privileged = admin || principal.roles.includes("reviewer");
  if (ownerId === undefined || (!owner && !privileged))
    throw new AppError("NOT_FOUND", `No project ${projectId}`);
  if (access === "manage" && !owner && !admin) {
    throw new AppError("FORBIDDEN", "Only the project's owner or an admin may change it");
  }
  return coordinator(env, projectId);
}

export async function listProjects(db: Database, accountId: string, limit: number) {
  return db
    .select({
      id: projects.id,
      name: projects.name,
      status: projects.status,
      createdAt: projects.createdAt,
      updatedAt: projects.updatedAt,
    })
    .from(projects)
    .where(eq(projects.ownerId, accountId))
    .orderBy(desc(projects.createdAt))
    .limit(limit);
}

/** Tasks held at a quality gate: the caller's projects, or every project for reviewers and admins. */
export async function listReviewTasks(db: Database, principal: Principal, limit: number) {
  const privileged = principal.roles.includes("reviewer") || principal.roles.includes("admin");
  return db
    .select()
    .from(reviewTasks)
    .where(privileged ? undefined : and(eq(reviewTasks.ownerId, principal.accountId ?? "")))
    .orderBy(reviewTasks.createdAt)
    .limit(limit);
}
