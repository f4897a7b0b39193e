-- Daily charges per buyer, capsule and model: the source of invoices, which must outlive the raw events
-- (retention drops raw days, never rollups). Charges are never re-sent by the platform, and the events
-- consumer stores each id once, so the view counts each charge once.
CREATE TABLE IF NOT EXISTS charges_daily (
  day Date,
  account_id String,
  capsule String,
  model String,
  charges UInt64,
  tokens UInt64,
  amount_micro_usd Int64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, day, capsule, model);

-- Charges stored before the rollup existed. It only runs while the rollup is empty, so running this file
-- again after a failure adds nothing twice.
INSERT INTO charges_daily
SELECT
  toDate(time) AS day,
  account_id,
  capsule,
  model,
  count() AS charges,
  sum(visitParamExtractUInt(data, 'tokens')) AS tokens,
  sum(amount_micro_usd) AS amount_micro_usd
FROM events FINAL
WHERE type = 'soma.charge.recorded' AND (SELECT count() FROM charges_daily) = 0
GROUP BY day, account_id, capsule, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS charges_daily_mv TO charges_daily AS
SELECT
  toDate(time) AS day,
  account_id,
  capsule,
  model,
  count() AS charges,
  sum(visitParamExtractUInt(data, 'tokens')) AS tokens,
  sum(amount_micro_usd) AS amount_micro_usd
FROM events
WHERE type = 'soma.charge.recorded'
GROUP BY day, account_id, capsule, model;
