-- What an API key may do, as a JSON array of scopes (workers/shared/auth/scopes.ts). NULL is full access: sign-up's
-- first key, admin recovery keys and every key made before scopes existed.
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
