-- Outgoing webhooks: an account's HTTPS endpoints and the short event names they subscribe to. The secret signs
-- every delivery (Soma-Signature), so it is kept in a form the consumer can use; it is shown to the owner once.
CREATE TABLE webhooks (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  url TEXT NOT NULL,
  events TEXT NOT NULL,
  secret TEXT NOT NULL,
  description TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX webhooks_account ON webhooks(account_id);

-- One delivery per (webhook, event): UNIQUE makes fan-out idempotent when an events batch is redelivered.
-- `generation` grows on each manual redelivery, so queue messages of an earlier round stop retrying.
CREATE TABLE webhook_deliveries (
  id TEXT PRIMARY KEY,
  webhook_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  body TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
  generation INTEGER NOT NULL DEFAULT 1,
  attempt_count INTEGER NOT NULL DEFAULT 0,
  last_response_status INTEGER,
  last_error TEXT,
  next_attempt_at TEXT,
  claimed_until TEXT,
  queued_at TEXT,
  delivered_at TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, created_at);

-- Every HTTP attempt of a delivery, for the delivery log.
CREATE TABLE webhook_attempts (
  id TEXT PRIMARY KEY,
  delivery_id TEXT NOT NULL,
  webhook_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  manual INTEGER NOT NULL DEFAULT 0,
  ok INTEGER NOT NULL,
  response_status INTEGER,
  error TEXT,
  duration_ms INTEGER NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, attempt);

-- Incoming GitHub webhooks: a repository linked to the account its releases are submitted as. Repository names
-- are stored lowercased (GitHub treats them case-insensitively), one account per repository.
CREATE TABLE github_links (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  repository TEXT NOT NULL UNIQUE,
  secret TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX github_links_account ON github_links(account_id);
