import { execFile, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { describe, expect, inject, it } from "vitest";

const root = resolve(import.meta.dirname, "../..");
const baseUrl = (inject("baseUrl") || process.env.SOMA_E2E_URL)?.replace(/\/+$/, "");
const adminToken = inject("adminToken") || process.env.SOMA_E2E_ADMIN_TOKEN || "";
const stateDir = inject("stateDir") || process.env.SOMA_E2E_STATE_DIR || "";
const run = promisify(execFile);

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `npx soma audit verify`, as an operator runs it. */
function verify(token = adminToken): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, SOMA_CONFIG: join(root, ".state", "no-such-config.json") };
  delete env.SOMA_URL;
  delete env.SOMA_TOKEN;
  return new Promise((done, failed) => {
    const child = spawn(
      "npx",
      ["--no-install", "soma", "audit", "verify", "--url", baseUrl!, "--token", token],
      {
        cwd: root,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    child.once("error", failed);
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

/** SQL straight into the platform's local D1, as someone with access to its storage could. */
async function d1(sql: string): Promise<Record<string, unknown>[]> {
  const { stdout } = await run(
    "npx",
    [
      "wrangler",
      "d1",
      "execute",
      "DB",
      "--local",
      "--persist-to",
      join(stateDir, "wrangler"),
      "--json",
      "--command",
      sql,
    ],
    {
      cwd: root,
      env: {
        ...process.env,
        CI: "true",
        WRANGLER_SEND_METRICS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        XDG_CONFIG_HOME: join(root, ".wrangler/config"),
      },
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  const parsed = JSON.parse(stdout) as { results: Record<string, unknown>[] }[];
  return parsed.flatMap((r) => r.results);
}

async function post(path: string, json: unknown): Promise<Response> {
  return fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify(json),
  });
}

const TRIGGERS = `
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_seal_only BEFORE UPDATE ON audit_log
WHEN OLD.hash IS NOT NULL OR NEW.seq IS NOT OLD.seq OR NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at
  OR NEW.actor IS NOT OLD.actor OR NEW.action IS NOT OLD.action OR NEW.target IS NOT OLD.target
  OR NEW.details IS NOT OLD.details
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;`;

describe.skipIf(!baseUrl)("soma audit verify", () => {
  it("passes on the platform's log and refuses a token that is not an admin's", async () => {
    const handle = `audit${Date.now().toString(36)}`;
    const signup = await fetch(`${baseUrl}/v1/accounts`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ handle, email: `${handle}@example.com` }),
    });
    expect(signup.status).toBe(201);
    const { apiKey } = (await signup.json()) as { apiKey: string };
    expect((await post(`/v1/accounts/${handle}/roles`, { roles: ["reviewer"] })).status).toBe(200);

    const ok = await verify();
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/Audit log intact: \d+ entries, head [0-9a-f]{64}/);
    const refused = await verify(apiKey);
    expect(refused.code).toBe(1);
    expect(refused.stderr + refused.stdout).toMatch(/FORBIDDEN|admin/);
  });

  it.skipIf(!stateDir)(
    "exits non-zero when an entry is edited, deleted, or the last one removed, and 0 once restored",
    async () => {
      const handle = `tamper${Date.now().toString(36)}`;
      const signup = await fetch(`${baseUrl}/v1/accounts`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ handle, email: `${handle}@example.com` }),
      });
      expect(signup.status).toBe(201);
      expect((await post(`/v1/accounts/${handle}/roles`, { roles: ["reviewer"] })).status).toBe(200);

      // The role change just made (edited below) and the entry before it (deleted below).
      const [edited, before] = await d1(
        "SELECT * FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log WHERE action = 'account.roles_changed'); SELECT * FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log WHERE action = 'account.roles_changed') - 1",
      );
      const seq = Number(edited!.seq);
      const original = String(edited!.details);
      const quote = (v: unknown) => (v === null ? "NULL" : `'${String(v).replaceAll("'", "''")}'`);
      const columns = ["seq", "id", "at", "actor", "action", "target", "details", "prev_hash", "hash"];
      const reinsert = (row: Record<string, unknown>) =>
        `INSERT INTO audit_log (${columns.join(", ")}) VALUES (${columns.map((c) => quote(row[c])).join(", ")})`;

      // Someone with the database in hand can drop the triggers; the chain still gives them away.
      await d1(
        `DROP TRIGGER audit_log_seal_only; UPDATE audit_log SET details = ${quote(original.replace("reviewer", "admin"))} WHERE seq = ${seq}`,
      );
      const afterEdit = await verify();
      expect(afterEdit.code).toBe(1);
      expect(afterEdit.stdout).toContain(`entry ${seq} (account.roles_changed`);
      expect(afterEdit.stdout).toContain("was edited");

      // Undo the edit and delete the entry before it instead: the gap gives that away.
      const middle = Number(before!.seq);
      await d1(
        `UPDATE audit_log SET details = ${quote(original)} WHERE seq = ${seq}; DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = ${middle}`,
      );
      const afterDelete = await verify();
      expect(afterDelete.code).toBe(1);
      expect(afterDelete.stdout).toContain(`entries ${middle}..${middle} are missing (deleted)`);
      expect(afterDelete.stdout).not.toContain("was edited");

      const [last] = await d1("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1");
      await d1(`${reinsert(before!)}; DELETE FROM audit_log WHERE seq = ${Number(last!.seq)}`);
      const afterTruncate = await verify();
      expect(afterTruncate.code).toBe(1);
      expect(afterTruncate.stdout).toMatch(/at the end are missing \(deleted\)/);
      expect(afterTruncate.stdout).not.toContain("was edited");

      await d1(`${reinsert(last!)}; ${TRIGGERS}`);
      const restored = await verify();
      expect(restored.code, restored.stdout).toBe(0);
    },
    180_000,
  );
});
