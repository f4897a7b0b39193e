-- The audit log of security-relevant actions (workers/shared/audit/log.ts). Append-only: rows are inserted in the
-- same batch as the action they record, and later sealed into a hash chain (prev_hash, hash) in seq order. The
-- triggers refuse deletes and any update other than sealing an unsealed row; `soma audit verify` recomputes the
-- chain, so an edit or a delete made around the triggers is still found.
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  details TEXT NOT NULL,
  prev_hash TEXT,
  hash TEXT
);
CREATE INDEX audit_log_unsealed ON audit_log(seq) WHERE hash IS NULL;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_seal_only BEFORE UPDATE ON audit_log
WHEN OLD.hash IS NOT NULL OR NEW.seq IS NOT OLD.seq OR NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at
  OR NEW.actor IS NOT OLD.actor OR NEW.action IS NOT OLD.action OR NEW.target IS NOT OLD.target
  OR NEW.details IS NOT OLD.details
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
