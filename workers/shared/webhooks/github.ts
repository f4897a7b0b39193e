import { and, desc, eq, sql } from "drizzle-orm";
import { z } from "zod";
import { type AuditActor, auditStatement, sealAuditLog } from "../audit/log";
import type { Principal } from "../auth/principal";
import type { Role } from "../auth/roles";
import { type Database, isUniqueViolation, newId, nowIso } from "../db/client";
import { accounts, githubLinks } from "../db/schema";
import { concatBytes } from "../encoding";
import { AppError } from "../errors";
import { bundleLimits } from "../marketplace/limits";
import type { PublishEnv } from "../marketplace/publishing";
import { type SubmissionView, submitBundle } from "../marketplace/submissions";
import { generateSecret, verifyHmacSha256Hex } from "./signature";
import { checkOutboundUrl, type UrlPolicyEnv } from "./url-policy";

/** GitHub's `owner/repo`: owners are 1-39 letters, digits or '-', repositories 1-100 of [A-Za-z0-9._-]. */
export const repositorySchema = z
  .string()
  .regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/[A-Za-z0-9._-]{1,100}$/, "not a GitHub owner/repo name")
  .refine((name) => !name.endsWith("/.") && !name.endsWith("/.."), "not a GitHub owner/repo name");

/** Release assets submitted as capsule bundles, by file name. */
const BUNDLE_ASSET = /\.(?:tar\.gz|tgz)$/i;
/** At most this many bundles are submitted from one release. */
export const MAX_BUNDLES_PER_RELEASE = 5;
const MAX_REDIRECTS = 5;
const FETCH_TIMEOUT_MS = 20_000;

export interface GithubLinkView {
  id: string;
  repository: string;
  createdAt: string;
}

type LinkRow = typeof githubLinks.$inferSelect;

function view(row: LinkRow): GithubLinkView {
  return { id: row.id, repository: row.repository, createdAt: row.createdAt };
}

/**
 * Links a GitHub repository to an account: its signed release webhooks then submit bundles as that account.
 * One account per repository. The secret (generated unless given) goes into the GitHub webhook's settings and is
 * returned here only.
 */
export async function linkGithubRepository(
  db: Database,
  actor: AuditActor,
  accountId: string,
  input: { repository: string; secret?: string | undefined },
): Promise<{ link: GithubLinkView; secret: string }> {
  const row: LinkRow = {
    id: newId("ghl"),
    accountId,
    repository: input.repository.toLowerCase(),
    secret: input.secret ?? generateSecret("ghsec"),
    createdAt: nowIso(),
  };
  try {
    await db.batch([
      db.insert(githubLinks).values(row),
      auditStatement(db, {
        actor,
        action: "integration.github_linked",
        target: `account:${accountId}`,
        details: { linkId: row.id, repository: row.repository },
      }),
    ]);
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new AppError("CONFLICT", `${input.repository} is already linked to an account; unlink it first`, {
        path: "repository",
      });
    }
    throw error;
  }
  await sealAuditLog(db);
  return { link: view(row), secret: row.secret };
}

export async function listGithubLinks(db: Database, accountId: string): Promise<GithubLinkView[]> {
  const rows = await db
    .select()
    .from(githubLinks)
    .where(eq(githubLinks.accountId, accountId))
    .orderBy(desc(githubLinks.createdAt));
  return rows.map(view);
}

export async function unlinkGithubRepository(
  db: Database,
  actor: AuditActor,
  accountId: string,
  id: string,
): Promise<void> {
  // The entry goes first, on the condition that the link is there to delete: same batch, same answer.
  const [, deleted] = await db.batch([
    auditStatement(
      db,
      {
        actor,
        action: "integration.github_unlinked",
        target: `account:${accountId}`,
        details: { linkId: id },
      },
      sql`EXISTS (SELECT 1 FROM github_links WHERE id = ${id} AND account_id = ${accountId})`,
    ),
    db
      .delete(githubLinks)
      .where(and(eq(githubLinks.id, id), eq(githubLinks.accountId, accountId)))
      .returning({ id: githubLinks.id }),
  ]);
  if (deleted.length === 0) throw new AppError("NOT_FOUND", `No GitHub link ${id}`);
  await sealAuditLog(db);
}

const repositoryOnly = z.object({ repository: z.object({ full_name: z.string().max(200) }) });

function payloadText(raw: Uint8Array, contentType: string): string | null {
  const text = new TextDecoder().decode(raw);
  // GitHub signs the raw body in both of its content types; the form one carries the JSON as `payload`.
  if (/^application\/x-www-form-urlencoded\b/i.test(contentType)) {
    return new URLSearchParams(text).get("payload");
  }
  return text;
}

/**
 * Authenticates a GitHub webhook: finds the linked repository the payload names and checks
 * `X-Hub-Signature-256` (`sha256=<hex HMAC-SHA256 of the raw body>`) with that link's secret. Any failure,
 * including an unknown repository, is UNAUTHENTICATED and says nothing about which repositories are linked.
 */
export async function authenticateGithubHook(
  db: Database,
  raw: Uint8Array,
  headers: { signature: string | undefined; contentType: string },
): Promise<{ link: LinkRow; payload: unknown }> {
  const refuse = () =>
    new AppError(
      "UNAUTHENTICATED",
      "X-Hub-Signature-256 does not verify with the webhook secret of a linked repository",
    );
  const signature = headers.signature?.match(/^sha256=([0-9a-fA-F]{64})$/)?.[1];
  if (!signature) throw refuse();
  const text = payloadText(raw, headers.contentType);
  let payload: unknown;
  try {
    payload = text === null ? null : JSON.parse(text);
  } catch {
    throw refuse();
  }
  const named = repositoryOnly.safeParse(payload);
  if (!named.success) throw refuse();
  const [link] = await db
    .select()
    .from(githubLinks)
    .where(eq(githubLinks.repository, named.data.repository.full_name.toLowerCase()))
    .limit(1);
  if (!link || !(await verifyHmacSha256Hex(link.secret, raw, signature))) throw refuse();
  return { link, payload };
}

const releasePayloadSchema = z.object({
  action: z.string(),
  release: z.object({
    tag_name: z.string(),
    draft: z.boolean().optional(),
    assets: z
      .array(z.object({ name: z.string(), browser_download_url: z.string(), state: z.string().optional() }))
      .max(1000),
  }),
});

export type GithubHookResult =
  | { ignored: true; event: string; reason: string }
  | {
      ignored: false;
      event: "release";
      release: string;
      results: (
        | { asset: string; submission: SubmissionView }
        | { asset: string; error: { code: string; message: string } }
      )[];
    };

type GithubEnv = PublishEnv & UrlPolicyEnv;

/**
 * Acts on an authenticated GitHub event. A published release submits each capsule bundle asset (`.tar.gz` or
 * `.tgz`, at most MAX_BUNDLES_PER_RELEASE) as the linked account; every other event is ignored.
 */
export async function handleGithubEvent(
  env: GithubEnv,
  db: Database,
  link: LinkRow,
  event: string,
  payload: unknown,
): Promise<GithubHookResult> {
  if (event !== "release") return { ignored: true, event, reason: "only release events are acted on" };
  const release = releasePayloadSchema.safeParse(payload);
  if (!release.success) {
    throw new AppError("VALIDATION_FAILED", "The release payload is not in GitHub's release event shape");
  }
  const { action, release: r } = release.data;
  if (action !== "published" || r.draft) {
    return { ignored: true, event, reason: `release action "${action}" is not a publication` };
  }
  const bundles = r.assets
    .filter((a) => BUNDLE_ASSET.test(a.name) && (a.state ?? "uploaded") === "uploaded")
    .slice(0, MAX_BUNDLES_PER_RELEASE);
  if (bundles.length === 0) {
    return { ignored: true, event, reason: `release ${r.tag_name} has no .tar.gz or .tgz asset` };
  }
  const results: Extract<GithubHookResult, { ignored: false }>["results"] = [];
  let firstError: AppError | null = null;
  for (const asset of bundles) {
    try {
      const bytes = await fetchReleaseAsset(env, asset.browser_download_url);
      results.push({ asset: asset.name, submission: await submitAsLinkedAccount(env, db, link, bytes) });
    } catch (error) {
      if (!(error instanceof AppError)) throw error;
      firstError ??= error;
      results.push({ asset: asset.name, error: { code: error.code, message: error.message } });
    }
  }
  // When nothing was submitted the status says why, so GitHub's delivery log shows the failure.
  if (firstError && results.every((result) => "error" in result)) {
    throw new AppError(firstError.code, `${bundles[0]?.name}: ${firstError.message}`, { results });
  }
  return { ignored: false, event: "release", release: r.tag_name, results };
}

/** Submits bundle bytes as the account a repository is linked to, exactly as `POST /v1/capsules` would. */
export async function submitAsLinkedAccount(
  env: PublishEnv,
  db: Database,
  link: Pick<LinkRow, "accountId" | "repository">,
  bytes: Uint8Array,
): Promise<SubmissionView> {
  const [account] = await db
    .select({ id: accounts.id, handle: accounts.handle, roles: accounts.roles })
    .from(accounts)
    .where(eq(accounts.id, link.accountId))
    .limit(1);
  if (!account) throw new AppError("FORBIDDEN", `The account linked to ${link.repository} no longer exists`);
  const principal: Principal & { accountId: string; handle: string } = {
    accountId: account.id,
    handle: account.handle,
    roles: account.roles as Role[],
    via: "api_key",
    scopes: ["full"],
  };
  return submitBundle(env, db, principal, bytes);
}

/**
 * Downloads a release asset under the outbound URL policy, following GitHub's redirect to its asset storage
 * (each hop checked), and refusing bodies larger than the bundle limit.
 */
export async function fetchReleaseAsset(env: GithubEnv, rawUrl: string): Promise<Uint8Array> {
  const maxBytes = bundleLimits(env).maxCompressedBytes;
  let url = rawUrl;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const verdict = checkOutboundUrl(url, env);
    if (!verdict.ok) {
      throw new AppError("VALIDATION_FAILED", `The release asset URL is refused: ${verdict.reason}`, {
        url,
      });
    }
    let response: Response;
    try {
      response = await fetch(verdict.url.toString(), {
        headers: { accept: "application/octet-stream", "user-agent": "SomaAgent-Edge" },
        redirect: "manual",
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
    } catch (error) {
      throw new AppError("UPSTREAM_FAILED", `Could not download the release asset: ${String(error)}`, {
        url,
      });
    }
    const location = response.headers.get("location");
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      url = new URL(location, verdict.url).toString();
      continue;
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new AppError("UPSTREAM_FAILED", `Downloading the release asset answered ${response.status}`, {
        url,
        status: response.status,
      });
    }
    return readBounded(response, maxBytes);
  }
  throw new AppError("UPSTREAM_FAILED", `The release asset redirected more than ${MAX_REDIRECTS} times`, {
    url: rawUrl,
  });
}

async function readBounded(response: Response, maxBytes: number): Promise<Uint8Array> {
  const tooLarge = () =>
    new AppError("PAYLOAD_TOO_LARGE", `The release asset is larger than ${maxBytes} bytes`, {
      limit: "compressed",
      maxBytes,
    });
  const declared = Number(response.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel();
    throw tooLarge();
  }
  const reader = response.body!.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return concatBytes(chunks, total);
}
