-- Double-entry ledger in integer micro-USD: every paid execution is one transaction whose debits equal its
-- credits (buyer debit = author credit + platform credit). UNIQUE makes recording idempotent per attempt.
CREATE TABLE ledger_entries (
  id TEXT PRIMARY KEY,
  tx_id TEXT NOT NULL,
  account_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
  kind TEXT NOT NULL,
  amount_micro_usd INTEGER NOT NULL CHECK (amount_micro_usd >= 0),
  capsule TEXT,
  project_id TEXT,
  attempt_id TEXT,
  period TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (tx_id, account_id, kind)
);
CREATE INDEX ledger_account_period ON ledger_entries(account_id, period, kind);

-- Credits and discounts an admin grants an account for a billing month.
CREATE TABLE account_adjustments (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  period TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('credit', 'discount')),
  amount_micro_usd INTEGER NOT NULL DEFAULT 0,
  percent INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX account_adjustments_account ON account_adjustments(account_id, period);

-- The author's share of each execution charge, per capsule (the platform keeps the rest).
ALTER TABLE capsules ADD COLUMN author_share_pct INTEGER NOT NULL DEFAULT 70;
