-- Outbox rows stay until the analytics consumer has stored their event: sent_at is when a row was last handed
-- to the events queue, stored_at when the consumer confirmed it. The cron sends again rows handed over but not
-- confirmed after a while (a queue that lost the message) and deletes confirmed ones.
ALTER TABLE outbox ADD COLUMN sent_at TEXT;
ALTER TABLE outbox ADD COLUMN stored_at TEXT;
CREATE INDEX outbox_pending ON outbox(stored_at, sent_at);
