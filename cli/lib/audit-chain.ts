import { createHash } from "node:crypto";

/** One audit log entry as `GET /v1/admin/audit` returns it. */
export interface AuditEntry {
  seq: number;
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string;
  details: unknown;
  prevHash: string | null;
  hash: string | null;
}

export interface ChainReport {
  entries: number;
  head: string | null;
  problems: string[];
}

const GENESIS = "0".repeat(64);

// Written apart from the Worker's code on purpose: a verifier that shared the platform's implementation would
// share its bugs. Objects with sorted keys, no whitespace, values as JSON.stringify writes them.
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonical(v ?? null)).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((k) => record[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(record[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** sha256hex(prev + "\n" + canonical entry content), the hash the platform stores with each entry. */
export function expectedHash(prev: string, entry: AuditEntry): string {
  const { seq, id, at, actor, action, target, details } = entry;
  return createHash("sha256")
    .update(`${prev}\n${canonical({ seq, id, at, actor, action, target, details })}`)
    .digest("hex");
}

/**
 * Checks a whole log, in seq order: seqs run from 1 without gaps (a deleted entry leaves one), each entry links to
 * the hash of the one before, each hash matches the entry's content (an edit changes it), and the last seq is the
 * highest the platform ever assigned (a deleted last entry).
 */
export function verifyChain(entries: AuditEntry[], lastSeq: number): ChainReport {
  const problems: string[] = [];
  let prev = GENESIS;
  let expectedSeq = 1;
  for (const entry of entries) {
    if (entry.seq !== expectedSeq) {
      problems.push(
        entry.seq > expectedSeq
          ? `entries ${expectedSeq}..${entry.seq - 1} are missing (deleted)`
          : `entry ${entry.seq} is out of order`,
      );
    }
    if (entry.hash === null) {
      problems.push(`entry ${entry.seq} is not sealed into the chain`);
    } else {
      if (entry.prevHash !== prev) problems.push(`entry ${entry.seq} does not link to the entry before it`);
      // Its content is checked against the link it holds, so a deletion before it is not also called an edit.
      if (expectedHash(entry.prevHash ?? prev, entry) !== entry.hash) {
        problems.push(
          `entry ${entry.seq} (${entry.action} ${entry.target}) was edited: its hash does not match`,
        );
      }
    }
    prev = entry.hash ?? prev;
    expectedSeq = entry.seq + 1;
  }
  const last = entries.at(-1)?.seq ?? 0;
  if (lastSeq > last) problems.push(`entries ${last + 1}..${lastSeq} at the end are missing (deleted)`);
  return { entries: entries.length, head: entries.at(-1)?.hash ?? null, problems };
}
