-- Ratings and reviews: one per account per capsule (1-5 stars, optional text stored exactly as written).
-- 'hidden' waits for a moderator after enough reports and still counts in the rating (so reporting cannot be
-- used to bury honest ratings); 'removed' is a moderator's decision and no longer counts.
CREATE TABLE capsule_reviews (
  id TEXT PRIMARY KEY,
  capsule_name TEXT NOT NULL,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
  text TEXT,
  status TEXT NOT NULL DEFAULT 'visible' CHECK (status IN ('visible', 'hidden', 'removed')),
  helpful_count INTEGER NOT NULL DEFAULT 0,
  not_helpful_count INTEGER NOT NULL DEFAULT 0,
  -- Reports not yet resolved by a moderator; recounted in the batch that adds or resolves one.
  open_reports INTEGER NOT NULL DEFAULT 0,
  reply_text TEXT,
  replied_at TEXT,
  reply_updated_at TEXT,
  moderated_by TEXT,
  moderated_at TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  UNIQUE (capsule_name, account_id)
);
CREATE INDEX capsule_reviews_recent ON capsule_reviews(capsule_name, status, updated_at DESC);
CREATE INDEX capsule_reviews_helpful ON capsule_reviews(capsule_name, status, helpful_count DESC);
CREATE INDEX capsule_reviews_moderation ON capsule_reviews(status, open_reports DESC);

-- Helpful / not helpful, one per account per review (changeable).
CREATE TABLE review_votes (
  review_id TEXT NOT NULL REFERENCES capsule_reviews(id),
  account_id TEXT NOT NULL REFERENCES accounts(id),
  helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (review_id, account_id)
);

-- One report per account per review, ever: a restored review cannot be re-hidden by the same reporters.
CREATE TABLE review_reports (
  review_id TEXT NOT NULL REFERENCES capsule_reviews(id),
  account_id TEXT NOT NULL REFERENCES accounts(id),
  reason TEXT NOT NULL,
  created_at TEXT NOT NULL,
  resolved_at TEXT,
  PRIMARY KEY (review_id, account_id)
);

-- Collections of capsules: an account's own (public or private) or curated by the platform (owner_id NULL
-- when an admin made it with the bootstrap token).
CREATE TABLE collections (
  id TEXT PRIMARY KEY,
  owner_id TEXT REFERENCES accounts(id),
  title TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
  curated INTEGER NOT NULL DEFAULT 0 CHECK (curated IN (0, 1)),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX collections_listing ON collections(visibility, curated DESC, updated_at DESC);
CREATE INDEX collections_owner ON collections(owner_id, updated_at DESC);

CREATE TABLE collection_items (
  collection_id TEXT NOT NULL REFERENCES collections(id),
  capsule_name TEXT NOT NULL,
  added_at TEXT NOT NULL,
  PRIMARY KEY (collection_id, capsule_name)
);

-- The admin-picked featured shelf, in the order picked.
CREATE TABLE featured_capsules (
  capsule_name TEXT PRIMARY KEY,
  position INTEGER NOT NULL,
  featured_by TEXT,
  featured_at TEXT NOT NULL
);

-- Discovery reads: who installed a capsule (used together), recent installs and executions (trending), and
-- whether an account ran a capsule (rating eligibility).
CREATE INDEX installs_capsule ON installs(capsule_name, removed_at, account_id);
CREATE INDEX installs_created ON installs(created_at);
CREATE INDEX ledger_kind_created ON ledger_entries(kind, created_at);
CREATE INDEX ledger_kind_account_capsule ON ledger_entries(kind, account_id, capsule);
