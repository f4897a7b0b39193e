-- Hourly rollup per account, capsule, project, model and event type: the source of dashboards, usage,
-- invoices and forecasts. It outlives the raw events (retention drops raw days, never rollups).
CREATE TABLE IF NOT EXISTS usage_hourly (
  hour DateTime,
  account_id String,
  type String,
  capsule String,
  project_id String,
  model String,
  events UInt64,
  failures UInt64,
  input_tokens UInt64,
  output_tokens UInt64,
  amount_micro_usd Int64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, account_id, type, capsule, project_id, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
  toStartOfHour(time) AS hour,
  account_id,
  type,
  capsule,
  project_id,
  model,
  count() AS events,
  countIf(status = 'failure') AS failures,
  sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens,
  sum(amount_micro_usd) AS amount_micro_usd
FROM events
GROUP BY hour, account_id, type, capsule, project_id, model;
