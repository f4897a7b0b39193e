import { stringify } from "yaml";
import reviewerManifest from "../capsules/quality-reviewer/capsule.yaml?raw";
import reviewerSource from "../capsules/quality-reviewer/main.js?raw";
import { api, manifest, type SubmissionBody, signup, tarGz, upload } from "./helpers";

/** Publishes the real first-party quality reviewer under the soma namespace (once per test file). */
export async function publishReviewer(): Promise<void> {
  const res = await api("/v1/accounts", {
    method: "POST",
    json: { handle: "soma", email: "capsules@soma.dev" },
    headers: { "cf-connecting-ip": "203.0.113.200" },
  });
  if (res.status === 409) return;
  const { apiKey } = (await res.json()) as { apiKey: string };
  const published = await upload(
    apiKey,
    await tarGz([
      { name: "capsule.yaml", body: reviewerManifest },
      { name: "main.js", body: reviewerSource },
    ]),
  );
  if (published.status !== 201) throw new Error(`reviewer publish failed: ${await published.text()}`);
}

/** Publishes a worker capsule whose entrypoint is the given module source. */
export async function publishWorker(
  token: string,
  name: string,
  source: string,
  options: { permissions?: string[]; runtime?: string; tokens?: number; version?: string } = {},
): Promise<void> {
  const doc = manifest({
    name,
    permissions: options.permissions ?? [],
    runtime: options.runtime ?? "worker",
    version: options.version,
  });
  (doc.spec as Record<string, unknown>).tokenEstimate = { planning: 0, execution: options.tokens ?? 1000 };
  const res = await upload(
    token,
    await tarGz([
      { name: "capsule.yaml", body: stringify(doc) },
      { name: "dist/main.js", body: source },
    ]),
  );
  const body = (await res.json()) as SubmissionBody;
  if (res.status !== 201 || body.submission.status !== "published") {
    throw new Error(`publish ${name} failed: ${res.status} ${JSON.stringify(body)}`);
  }
}

export interface Snapshot {
  id: string;
  status: string;
  failureReason: string | null;
  tasks: {
    id: string;
    status: string;
    attempts: number;
    score: number | null;
    usage: { totalTokens: number };
    lastError: string | null;
  }[];
  budget: { limitTokens: number; reservedTokens: number; spentTokens: number };
}

export async function createProject(token: string, body: Record<string, unknown>): Promise<Response> {
  return api("/v1/projects", { method: "POST", token, json: body });
}

export async function getProject(token: string, id: string): Promise<Snapshot> {
  const res = await api(`/v1/projects/${id}`, { token });
  if (res.status !== 200) throw new Error(`get project: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { project: Snapshot }).project;
}

/** Polls until the project reaches one of the statuses (queues deliver in about a second locally). */
export async function waitForStatus(
  token: string,
  id: string,
  statuses: string[],
  timeoutMs = 45_000,
): Promise<Snapshot> {
  const deadline = Date.now() + timeoutMs;
  let last: Snapshot | null = null;
  while (Date.now() < deadline) {
    last = await getProject(token, id);
    if (statuses.includes(last.status)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `project ${id} stayed ${last?.status}: ${JSON.stringify(last?.tasks.map((t) => [t.id, t.status, t.lastError]))}`,
  );
}

export { signup };
