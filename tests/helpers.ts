import { env, exports } from "cloudflare:workers";
import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { stringify } from "yaml";

export const BASE = "http://127.0.0.1:8787";
export const adminToken = (): string => env.SOMA_ADMIN_TOKEN;

/** Calls the Worker's real fetch handler. */
export function api(
  path: string,
  init: RequestInit & { token?: string; json?: unknown } = {},
): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set("content-type", "application/json");
    body = JSON.stringify(init.json);
  }
  return exports.default.fetch(new Request(`${BASE}${path}`, { ...init, headers, body }));
}

let counter = 0;
/** A unique handle per call: storage is shared by the tests of one file. */
export function uniqueHandle(prefix = "u"): string {
  counter += 1;
  return `${prefix}${Date.now().toString(36)}${counter}`.slice(0, 39);
}

function randomIp(): string {
  return `10.${Math.floor(Math.random() * 255)}.${Math.floor(Math.random() * 255)}.${Math.floor(Math.random() * 255)}`;
}

/** Signs up an account (from its own client address, so sign-up rate limits do not interfere). */
export async function signup(
  handle = uniqueHandle(),
): Promise<{ handle: string; apiKey: string; id: string }> {
  const res = await api("/v1/accounts", {
    method: "POST",
    json: { handle, email: `${handle}@example.com` },
    headers: { "cf-connecting-ip": randomIp() },
  });
  if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { account: { id: string }; apiKey: string };
  return { handle, apiKey: body.apiKey, id: body.account.id };
}

export async function grantRoles(handle: string, roles: string[]): Promise<void> {
  const res = await api(`/v1/accounts/${handle}/roles`, {
    method: "POST",
    token: adminToken(),
    json: { roles },
  });
  if (res.status !== 200) throw new Error(`roles failed: ${res.status} ${await res.text()}`);
}

export interface ManifestInput {
  name: string;
  version?: string;
  runtime?: string;
  permissions?: string[];
  dependencies?: Record<string, string>;
  tags?: string[];
  category?: string;
  description?: string;
}

export function manifest(input: ManifestInput): Record<string, unknown> {
  return {
    apiVersion: "soma.dev/v1",
    kind: "TaskCapsule",
    metadata: {
      name: input.name,
      version: input.version ?? "1.0.0",
      category: input.category ?? "Code",
      tags: input.tags ?? ["test"],
      license: "MIT",
    },
    spec: {
      description: input.description ?? `Test capsule ${input.name}`,
      runtime: input.runtime ?? "worker",
      entrypoint: "dist/main.js",
      permissions: input.permissions ?? ["artifacts.read"],
      dependencies: input.dependencies ?? {},
      tokenEstimate: { planning: 10, execution: 100 },
      inputs: { type: "object" },
      outputs: { type: "object" },
      pricing: { model: "free", amountUsd: 0 },
    },
  };
}

export interface RawEntry {
  name: string;
  body?: string | Uint8Array;
  type?: "file" | "directory" | "symlink" | "link";
  linkname?: string;
}

/** Packs entries into a .tar.gz exactly as given (so tests can build hostile bundles too). */
export async function tarGz(entries: RawEntry[]): Promise<Uint8Array> {
  const tar = await packTar(
    entries.map((e) => {
      const body = typeof e.body === "string" ? new TextEncoder().encode(e.body) : e.body;
      return {
        header: {
          name: e.name,
          type: e.type ?? "file",
          size: e.type === "file" || e.type === undefined ? (body?.length ?? 0) : 0,
          ...(e.linkname ? { linkname: e.linkname } : {}),
        },
        ...(body ? { body } : {}),
      };
    }),
  );
  return gzipSync(tar);
}

/** A valid bundle for a manifest, with a small entrypoint and optional extra files. */
export function bundle(
  input: ManifestInput | Record<string, unknown>,
  extra: RawEntry[] = [],
): Promise<Uint8Array> {
  const doc = "apiVersion" in input ? input : manifest(input as ManifestInput);
  return tarGz([
    { name: "capsule.yaml", body: stringify(doc) },
    { name: "dist/main.js", body: "export default { async run(input) { return { echoed: input }; } };\n" },
    ...extra,
  ]);
}

export function upload(
  token: string,
  bytes: Uint8Array,
  contentType = "application/gzip",
): Promise<Response> {
  return api("/v1/capsules", {
    method: "POST",
    token,
    body: bytes,
    headers: { "content-type": contentType },
  });
}

export interface SubmissionBody {
  submission: {
    id: string;
    name: string;
    version: string;
    status: string;
    riskScore: number;
    findings: { id: string }[];
  };
}

/** Publishes a low-risk capsule and fails the test if it does not publish at once. */
export async function publish(token: string, input: ManifestInput): Promise<SubmissionBody["submission"]> {
  const res = await upload(token, await bundle(input));
  const body = (await res.json()) as SubmissionBody;
  if (res.status !== 201 || body.submission.status !== "published") {
    throw new Error(`publish failed: ${res.status} ${JSON.stringify(body)}`);
  }
  return body.submission;
}

export async function errorOf(
  res: Response,
): Promise<{ code: string; message: string; requestId: string; details?: unknown }> {
  const body = (await res.json()) as {
    error: { code: string; message: string; requestId: string; details?: unknown };
  };
  return body.error;
}

export async function countRows(table: string): Promise<number> {
  const row = await env.DB.prepare(`SELECT count(*) AS n FROM ${table}`).first<{ n: number }>();
  return row?.n ?? 0;
}

export async function countObjects(prefix = ""): Promise<number> {
  const list = await env.BUNDLES.list({ prefix });
  return list.objects.length;
}
