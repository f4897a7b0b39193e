-- Price history per capsule. The price in force at a moment is the latest row whose effective_at has passed;
-- an increase takes effect 14 days after it is announced to installers, a decrease at once.
CREATE TABLE capsule_prices (
  id TEXT PRIMARY KEY,
  capsule TEXT NOT NULL,
  model TEXT NOT NULL,
  amount_micro_usd INTEGER NOT NULL CHECK (amount_micro_usd >= 0),
  effective_at TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX capsule_prices_capsule ON capsule_prices(capsule, effective_at);
