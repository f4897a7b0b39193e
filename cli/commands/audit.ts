import { ApiClient } from "../api.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { requireToken, resolveConnection } from "../config.ts";
import { CliError, UsageError } from "../errors.ts";
import { type AuditEntry, verifyChain } from "../lib/audit-chain.ts";
import { emit } from "../output.ts";

const PAGE = 1000;

/** `soma audit verify`: fetches the whole audit log and recomputes its hash chain. */
export const auditCommand: Command = {
  name: "audit",
  summary: "Verify the platform's hash-chained audit log (admin)",
  help: `Usage: soma audit verify --url <base> --token <admin token>

Reads every entry of the audit log (GET /v1/admin/audit) and recomputes its hash chain with code of its own:
each entry's hash is sha256 of the previous entry's hash and the entry's canonical JSON content. Exits 1 when
any entry was edited, deleted (a gap in the sequence, or missing entries at the end) or left out of the chain,
and lists what is wrong; exits 0 and prints the number of entries and the head hash when the chain is intact.

${COMMON_HELP}`,
  options: {},
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }, { io, env }) {
    if (positionals[0] !== "verify")
      throw new UsageError(`Unknown audit action "${positionals[0]}"; try verify`);
    const connection = await resolveConnection(values, env);
    requireToken(connection);
    const client = new ApiClient(connection);
    const entries: AuditEntry[] = [];
    let after = 0;
    let lastSeq = 0;
    for (;;) {
      const page = await client.json<{ items: AuditEntry[]; nextAfter: number | null; lastSeq: number }>(
        "GET",
        "/v1/admin/audit",
        { query: { after, limit: PAGE } },
      );
      entries.push(...page.items);
      lastSeq = page.lastSeq;
      if (page.nextAfter === null) break;
      if (page.nextAfter <= after)
        throw new CliError("The audit log's paging did not advance", { code: "BAD_RESPONSE" });
      after = page.nextAfter;
    }
    const report = verifyChain(entries, lastSeq);
    const ok = report.problems.length === 0;
    emit(io, values.json === true, { ok, ...report }, () =>
      ok
        ? `Audit log intact: ${report.entries} entries, head ${report.head ?? "(empty)"}`
        : [
            `Audit log tampered with (${report.problems.length} problems):`,
            ...report.problems.map((p) => `  ${p}`),
          ],
    );
    return ok ? 0 : 1;
  },
};
