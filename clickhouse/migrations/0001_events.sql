-- Raw platform events (CloudEvents), one row per event id. ReplacingMergeTree on id keeps a redelivered event
-- from ever counting twice in queries that read FINAL; the consumer also skips ids already stored, so the
-- rollups fed by the materialized view below see each event once. Daily partitions let retention drop a day.
CREATE TABLE IF NOT EXISTS events (
  id String,
  type String,
  source String,
  subject String,
  time DateTime,
  account_id String,
  project_id String,
  capsule String,
  model String,
  status String,
  input_tokens UInt64,
  output_tokens UInt64,
  amount_micro_usd Int64,
  data String,
  ingested_at DateTime
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toDate(time)
ORDER BY id;
