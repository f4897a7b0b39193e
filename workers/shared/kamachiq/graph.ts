import { AppError } from "../errors";
import type { TaskSpec } from "./spec";

export interface GraphProblem {
  task: string;
  problem: "duplicate_id" | "unknown_dependency" | "self_dependency" | "cycle";
  message: string;
}

/**
 * Checks a task graph: unique ids, dependencies that name existing tasks, no self-dependency, no cycles.
 * Returns the tasks in a topological order. Every problem names the offending tasks.
 */
export function validateGraph(tasks: TaskSpec[]): TaskSpec[] {
  const problems: GraphProblem[] = [];
  const byId = new Map<string, TaskSpec>();
  for (const task of tasks) {
    if (byId.has(task.id))
      problems.push({
        task: task.id,
        problem: "duplicate_id",
        message: `task id "${task.id}" is used twice`,
      });
    byId.set(task.id, task);
  }
  for (const task of tasks) {
    for (const dep of task.dependsOn) {
      if (dep === task.id) {
        problems.push({
          task: task.id,
          problem: "self_dependency",
          message: `task "${task.id}" depends on itself`,
        });
      } else if (!byId.has(dep)) {
        problems.push({
          task: task.id,
          problem: "unknown_dependency",
          message: `task "${task.id}" depends on unknown task "${dep}"`,
        });
      }
    }
  }
  if (problems.length > 0) throw graphError(problems);

  // Kahn's algorithm; whatever is left over sits on or behind a cycle.
  const indegree = new Map<string, number>();
  const dependants = new Map<string, string[]>();
  for (const task of tasks) {
    indegree.set(task.id, new Set(task.dependsOn).size);
    for (const dep of new Set(task.dependsOn)) dependants.set(dep, [...(dependants.get(dep) ?? []), task.id]);
  }
  const queue = tasks.filter((t) => indegree.get(t.id) === 0).map((t) => t.id);
  const order: TaskSpec[] = [];
  while (queue.length > 0) {
    const id = queue.shift()!;
    order.push(byId.get(id)!);
    for (const next of dependants.get(id) ?? []) {
      const left = (indegree.get(next) ?? 0) - 1;
      indegree.set(next, left);
      if (left === 0) queue.push(next);
    }
  }
  if (order.length !== tasks.length) {
    const cycle = findCycle(
      tasks.filter((t) => (indegree.get(t.id) ?? 0) > 0),
      byId,
    );
    throw graphError(
      [{ task: cycle[0] ?? "?", problem: "cycle", message: `dependency cycle: ${cycle.join(" -> ")}` }],
      cycle,
    );
  }
  return order;
}

function findCycle(remaining: TaskSpec[], byId: Map<string, TaskSpec>): string[] {
  const inRemaining = new Set(remaining.map((t) => t.id));
  const state = new Map<string, number>();
  const stack: string[] = [];
  const visit = (id: string): string[] | null => {
    if (state.get(id) === 2) return null;
    if (state.get(id) === 1) return [...stack.slice(stack.indexOf(id)), id];
    state.set(id, 1);
    stack.push(id);
    for (const dep of byId.get(id)?.dependsOn ?? []) {
      if (!inRemaining.has(dep)) continue;
      const found = visit(dep);
      if (found) return found;
    }
    stack.pop();
    state.set(id, 2);
    return null;
  };
  for (const task of remaining) {
    const found = visit(task.id);
    if (found) return found.reverse();
  }
  return remaining.map((t) => t.id);
}

function graphError(problems: GraphProblem[], cycle?: string[]): AppError {
  return new AppError(
    "VALIDATION_FAILED",
    `Invalid task graph: ${problems
      .slice(0, 5)
      .map((p) => p.message)
      .join("; ")}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ""}`,
    { problems, tasks: [...new Set(problems.map((p) => p.task))], ...(cycle ? { cycle } : {}) },
  );
}
