-- A verified publisher is an account an admin has vouched for; the catalog marks its capsules and can show them
-- alone (GET /v1/capsules?verified=true). verified_by is the admin's account id, or "admin-token" for the
-- bootstrap bearer; both are NULL while the account is unverified.
ALTER TABLE accounts ADD COLUMN verified_at TEXT;
ALTER TABLE accounts ADD COLUMN verified_by TEXT;
CREATE INDEX accounts_verified ON accounts(id) WHERE verified_at IS NOT NULL;
