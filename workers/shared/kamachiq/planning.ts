import type { Database } from "../db/client";
import type { CapsuleManifest } from "../domain/manifest";
import { resolveDependencies } from "../domain/resolve";
import { type Price, priceAt, priceOfManifest } from "../economics/prices";
import { AppError } from "../errors";
import { d1VersionSource } from "../marketplace/version-source";
import { validateGraph } from "./graph";
import type { TaskSpec } from "./spec";

/** A task with its capsule pinned to one installable version. */
export interface PinnedTask {
  id: string;
  capsule: string;
  version: string;
  runtime: CapsuleManifest["spec"]["runtime"];
  permissions: string[];
  inputs: Record<string, unknown>;
  dependsOn: string[];
  tokenEstimate: number;
  /** What one run may cost the project owner at today's price (micro-USD), for spend limits. */
  priceEstimateMicroUsd: number;
  /** The capsule's price in force when the task was pinned: a paid one must have been accepted by the owner. */
  price?: Price;
  successCriteria: string[];
}

/**
 * Pins every task's capsule to the highest installable version of its range (resolving the capsule's own
 * dependencies to prove it installs), checks the project accepted every permission those capsules declare,
 * and validates the graph. Errors name the offending tasks. Returns the tasks in topological order.
 */
export async function planTasks(
  db: Database,
  tasks: TaskSpec[],
  acceptPermissions: string[],
): Promise<PinnedTask[]> {
  const ordered = validateGraph(tasks);
  const { source, rows } = d1VersionSource(db);

  const pins = new Map<string, string>();
  const problems: { task: string; message: string }[] = [];
  for (const task of ordered) {
    const key = `${task.capsule.name}@${task.capsule.range}`;
    if (pins.has(key)) continue;
    try {
      const resolution = await resolveDependencies(task.capsule.name, task.capsule.range, source);
      pins.set(key, resolution.root.version);
    } catch (error) {
      if (!(error instanceof AppError)) throw error;
      pins.set(key, "");
      problems.push(
        ...ordered
          .filter((t) => `${t.capsule.name}@${t.capsule.range}` === key)
          .map((t) => ({ task: t.id, message: `task "${t.id}": ${error.message}` })),
      );
    }
  }
  if (problems.length > 0) {
    throw new AppError(
      "VALIDATION_FAILED",
      `Capsules not installable: ${problems.map((p) => p.message).join("; ")}`,
      {
        tasks: problems.map((p) => p.task),
        problems,
      },
    );
  }

  const accepted = new Set(acceptPermissions);
  const pinned = ordered.map((task): PinnedTask => {
    const version = pins.get(`${task.capsule.name}@${task.capsule.range}`)!;
    const manifest = rows.get(`${task.capsule.name}@${version}`)!.manifest as unknown as CapsuleManifest;
    return {
      id: task.id,
      capsule: task.capsule.name,
      version,
      runtime: manifest.spec.runtime,
      permissions: manifest.spec.permissions,
      inputs: task.inputs,
      dependsOn: [...new Set(task.dependsOn)],
      tokenEstimate:
        task.tokenEstimate ?? manifest.spec.tokenEstimate.planning + manifest.spec.tokenEstimate.execution,
      priceEstimateMicroUsd: 0,
      successCriteria: task.successCriteria,
    };
  });
  // Spend limits need a price before the run: per execution it is exact, per 1k tokens an upper bound.
  const prices = new Map<string, Price>();
  for (const task of pinned) {
    if (!prices.has(task.capsule)) {
      const manifest = rows.get(`${task.capsule}@${task.version}`)!.manifest as unknown as CapsuleManifest;
      prices.set(task.capsule, (await priceAt(db, task.capsule)) ?? priceOfManifest(manifest.spec.pricing));
    }
    const price = prices.get(task.capsule)!;
    task.price = price;
    task.priceEstimateMicroUsd =
      price.model === "per_execution"
        ? price.amountMicroUsd
        : price.model === "per_1k_tokens"
          ? Math.ceil((price.amountMicroUsd * task.tokenEstimate) / 1000)
          : 0;
  }
  const unaccepted = pinned
    .map((t) => ({ task: t.id, missing: t.permissions.filter((p) => !accepted.has(p)) }))
    .filter((t) => t.missing.length > 0);
  if (unaccepted.length > 0) {
    const missing = [...new Set(unaccepted.flatMap((t) => t.missing))].sort();
    throw new AppError(
      "PERMISSIONS_NOT_ACCEPTED",
      `Accept these permissions in spec.acceptPermissions: ${missing.join(", ")} (needed by ${unaccepted.map((t) => t.task).join(", ")})`,
      { missing, tasks: unaccepted.map((t) => t.task) },
    );
  }
  return pinned;
}
