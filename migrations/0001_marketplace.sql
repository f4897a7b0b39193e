-- Accounts, API keys and the platform's signing keys.
CREATE TABLE accounts (
  id TEXT PRIMARY KEY,
  handle TEXT NOT NULL UNIQUE,
  email TEXT NOT NULL UNIQUE,
  roles TEXT NOT NULL DEFAULT '["user"]',
  created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  key_hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE signing_keys (
  keyid TEXT PRIMARY KEY,
  purpose TEXT NOT NULL,
  public_pem TEXT NOT NULL,
  public_jwk TEXT NOT NULL,
  created_at TEXT NOT NULL,
  -- Null while the key is current; set when a newer key of the same purpose replaces it.
  -- Signatures made before expiry stay valid, as in npm's registry keys.
  expires_at TEXT
);

-- Submissions: every uploaded bundle, its automated findings and the review decision.
CREATE TABLE submissions (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  status TEXT NOT NULL,
  risk_score REAL NOT NULL,
  findings TEXT NOT NULL,
  manifest TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  bundle_key TEXT NOT NULL,
  reviewer_id TEXT,
  decision_notes TEXT,
  decided_at TEXT,
  created_at TEXT NOT NULL
);
CREATE INDEX submissions_status ON submissions(status, created_at);
CREATE INDEX submissions_name_version ON submissions(name, version);
CREATE INDEX submissions_account ON submissions(account_id, created_at);

-- Published capsules (one row per name) and their immutable versions.
CREATE TABLE capsules (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  namespace TEXT NOT NULL,
  owner_id TEXT NOT NULL REFERENCES accounts(id),
  latest_version TEXT NOT NULL,
  description TEXT NOT NULL,
  category TEXT NOT NULL,
  tags TEXT NOT NULL,
  runtime TEXT NOT NULL,
  pricing_model TEXT NOT NULL,
  install_count INTEGER NOT NULL DEFAULT 0,
  execution_count INTEGER NOT NULL DEFAULT 0,
  rating_avg REAL NOT NULL DEFAULT 0,
  rating_count INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX capsules_category ON capsules(category);
CREATE INDEX capsules_popular ON capsules(install_count DESC, name);
CREATE INDEX capsules_recent ON capsules(updated_at DESC, name);
CREATE INDEX capsules_rating ON capsules(rating_avg DESC, name);

CREATE TABLE capsule_tags (
  capsule_id TEXT NOT NULL REFERENCES capsules(id),
  tag TEXT NOT NULL,
  PRIMARY KEY (tag, capsule_id)
);

CREATE TABLE capsule_versions (
  id TEXT PRIMARY KEY,
  capsule_id TEXT NOT NULL REFERENCES capsules(id),
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  status TEXT NOT NULL,
  manifest TEXT NOT NULL,
  dependencies TEXT NOT NULL,
  permissions TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  keyid TEXT NOT NULL,
  signature TEXT NOT NULL,
  submission_id TEXT NOT NULL,
  deprecation_message TEXT,
  yank_reason TEXT,
  published_at TEXT NOT NULL,
  UNIQUE (name, version)
);
CREATE INDEX capsule_versions_capsule ON capsule_versions(capsule_id);

-- Typo-tolerant catalog search: trigram tokens match substrings and misspellings share most trigrams.
CREATE VIRTUAL TABLE capsules_fts USING fts5(
  name, description, tags,
  capsule_id UNINDEXED,
  tokenize = 'trigram'
);

CREATE TABLE installs (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  capsule_name TEXT NOT NULL,
  range TEXT NOT NULL,
  version TEXT NOT NULL,
  lock TEXT NOT NULL,
  permissions TEXT NOT NULL,
  budget_tokens INTEGER,
  created_at TEXT NOT NULL,
  removed_at TEXT
);
CREATE INDEX installs_account ON installs(account_id, created_at);

-- Transactional outbox: domain events written with the state change, handed to the events Queue afterwards.
CREATE TABLE outbox (
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL,
  created_at TEXT NOT NULL
);
