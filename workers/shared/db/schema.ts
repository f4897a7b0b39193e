import { integer, real, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** Drizzle view of the D1 tables created by migrations/ (the SQL files are the source of truth). */

export const accounts = sqliteTable("accounts", {
  id: text("id").primaryKey(),
  handle: text("handle").notNull().unique(),
  email: text("email").notNull().unique(),
  roles: text("roles", { mode: "json" }).$type<string[]>().notNull(),
  createdAt: text("created_at").notNull(),
  /** When an admin verified the publisher; NULL while unverified. */
  verifiedAt: text("verified_at"),
  /** Who verified it: an admin's account id, or "admin-token". */
  verifiedBy: text("verified_by"),
});

export const apiKeys = sqliteTable("api_keys", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  keyHash: text("key_hash").notNull().unique(),
  prefix: text("prefix").notNull(),
  createdAt: text("created_at").notNull(),
  revokedAt: text("revoked_at"),
  /** JSON array of scopes (auth/scopes.ts); null is full access. */
  scopes: text("scopes", { mode: "json" }).$type<string[]>(),
});

export const signingKeys = sqliteTable("signing_keys", {
  keyid: text("keyid").primaryKey(),
  purpose: text("purpose").notNull(),
  publicPem: text("public_pem").notNull(),
  publicJwk: text("public_jwk", { mode: "json" }).$type<JsonWebKey>().notNull(),
  createdAt: text("created_at").notNull(),
  expiresAt: text("expires_at"),
});

export const submissions = sqliteTable("submissions", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  name: text("name").notNull(),
  version: text("version").notNull(),
  status: text("status").notNull(),
  riskScore: real("risk_score").notNull(),
  findings: text("findings", { mode: "json" }).$type<unknown[]>().notNull(),
  manifest: text("manifest", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
  sha256: text("sha256").notNull(),
  size: integer("size").notNull(),
  bundleKey: text("bundle_key").notNull(),
  reviewerId: text("reviewer_id"),
  decisionNotes: text("decision_notes"),
  decidedAt: text("decided_at"),
  createdAt: text("created_at").notNull(),
});

export const capsules = sqliteTable("capsules", {
  id: text("id").primaryKey(),
  name: text("name").notNull().unique(),
  namespace: text("namespace").notNull(),
  ownerId: text("owner_id").notNull(),
  latestVersion: text("latest_version").notNull(),
  description: text("description").notNull(),
  category: text("category").notNull(),
  tags: text("tags", { mode: "json" }).$type<string[]>().notNull(),
  runtime: text("runtime").notNull(),
  pricingModel: text("pricing_model").notNull(),
  installCount: integer("install_count").notNull().default(0),
  executionCount: integer("execution_count").notNull().default(0),
  ratingAvg: real("rating_avg").notNull().default(0),
  ratingCount: integer("rating_count").notNull().default(0),
  authorSharePct: integer("author_share_pct").notNull().default(70),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const capsuleTags = sqliteTable("capsule_tags", {
  capsuleId: text("capsule_id").notNull(),
  tag: text("tag").notNull(),
});

export const capsuleVersions = sqliteTable("capsule_versions", {
  id: text("id").primaryKey(),
  capsuleId: text("capsule_id").notNull(),
  name: text("name").notNull(),
  version: text("version").notNull(),
  status: text("status").notNull(),
  manifest: text("manifest", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
  dependencies: text("dependencies", { mode: "json" }).$type<Record<string, string>>().notNull(),
  permissions: text("permissions", { mode: "json" }).$type<string[]>().notNull(),
  sha256: text("sha256").notNull(),
  size: integer("size").notNull(),
  keyid: text("keyid").notNull(),
  signature: text("signature").notNull(),
  submissionId: text("submission_id").notNull(),
  deprecationMessage: text("deprecation_message"),
  yankReason: text("yank_reason"),
  publishedAt: text("published_at").notNull(),
});

export const installs = sqliteTable("installs", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  capsuleName: text("capsule_name").notNull(),
  range: text("range").notNull(),
  version: text("version").notNull(),
  lock: text("lock", { mode: "json" }).$type<unknown>().notNull(),
  permissions: text("permissions", { mode: "json" }).$type<string[]>().notNull(),
  budgetTokens: integer("budget_tokens"),
  createdAt: text("created_at").notNull(),
  removedAt: text("removed_at"),
});

export const outbox = sqliteTable("outbox", {
  id: text("id").primaryKey(),
  body: text("body").notNull(),
  createdAt: text("created_at").notNull(),
  /** When the row was last handed to the events queue; null until then. */
  sentAt: text("sent_at"),
  /** When the analytics consumer confirmed the event stored; the cron deletes the row after that. */
  storedAt: text("stored_at"),
  /** How many times the row was sent again unconfirmed; each further resend waits twice as long. */
  resends: integer("resends").notNull().default(0),
});

/** The FTS5 (trigram) search index over capsules; written alongside the capsule row. */
export const capsulesFts = sqliteTable("capsules_fts", {
  name: text("name").notNull(),
  description: text("description").notNull(),
  tags: text("tags").notNull(),
  capsuleId: text("capsule_id").notNull(),
});

export const projects = sqliteTable("projects", {
  id: text("id").primaryKey(),
  ownerId: text("owner_id").notNull(),
  name: text("name").notNull(),
  status: text("status").notNull(),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const reviewTasks = sqliteTable("review_tasks", {
  projectId: text("project_id").notNull(),
  taskId: text("task_id").notNull(),
  ownerId: text("owner_id").notNull(),
  capsule: text("capsule").notNull(),
  score: real("score"),
  createdAt: text("created_at").notNull(),
});

export const runnerJobs = sqliteTable("runner_jobs", {
  attemptId: text("attempt_id").primaryKey(),
  projectId: text("project_id").notNull(),
  taskId: text("task_id").notNull(),
  ownerId: text("owner_id").notNull(),
  payload: text("payload").notNull(),
  status: text("status").notNull(),
  runnerId: text("runner_id"),
  leaseUntil: text("lease_until"),
  claims: integer("claims").notNull().default(0),
  createdAt: text("created_at").notNull(),
  finishedAt: text("finished_at"),
});

export const deadLetters = sqliteTable("dead_letters", {
  id: text("id").primaryKey(),
  queue: text("queue").notNull(),
  body: text("body").notNull(),
  reason: text("reason").notNull(),
  createdAt: text("created_at").notNull(),
});

export const ledgerEntries = sqliteTable("ledger_entries", {
  id: text("id").primaryKey(),
  txId: text("tx_id").notNull(),
  accountId: text("account_id").notNull(),
  direction: text("direction").notNull(),
  kind: text("kind").notNull(),
  amountMicroUsd: integer("amount_micro_usd").notNull(),
  capsule: text("capsule"),
  projectId: text("project_id"),
  attemptId: text("attempt_id"),
  period: text("period").notNull(),
  createdAt: text("created_at").notNull(),
});

export const accountAdjustments = sqliteTable("account_adjustments", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  period: text("period").notNull(),
  kind: text("kind").notNull(),
  amountMicroUsd: integer("amount_micro_usd").notNull().default(0),
  percent: integer("percent").notNull().default(0),
  reason: text("reason").notNull(),
  createdAt: text("created_at").notNull(),
});

export const capsulePrices = sqliteTable("capsule_prices", {
  id: text("id").primaryKey(),
  capsule: text("capsule").notNull(),
  model: text("model").notNull(),
  amountMicroUsd: integer("amount_micro_usd").notNull(),
  effectiveAt: text("effective_at").notNull(),
  createdAt: text("created_at").notNull(),
});

export const webhooks = sqliteTable("webhooks", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  url: text("url").notNull(),
  events: text("events", { mode: "json" }).$type<string[]>().notNull(),
  secret: text("secret").notNull(),
  description: text("description"),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const webhookDeliveries = sqliteTable("webhook_deliveries", {
  id: text("id").primaryKey(),
  webhookId: text("webhook_id").notNull(),
  eventId: text("event_id").notNull(),
  eventType: text("event_type").notNull(),
  body: text("body").notNull(),
  status: text("status").notNull(),
  generation: integer("generation").notNull().default(1),
  attemptCount: integer("attempt_count").notNull().default(0),
  lastResponseStatus: integer("last_response_status"),
  lastError: text("last_error"),
  nextAttemptAt: text("next_attempt_at"),
  claimedUntil: text("claimed_until"),
  queuedAt: text("queued_at"),
  deliveredAt: text("delivered_at"),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const webhookAttempts = sqliteTable("webhook_attempts", {
  id: text("id").primaryKey(),
  deliveryId: text("delivery_id").notNull(),
  webhookId: text("webhook_id").notNull(),
  attempt: integer("attempt").notNull(),
  manual: integer("manual", { mode: "boolean" }).notNull().default(false),
  ok: integer("ok", { mode: "boolean" }).notNull(),
  responseStatus: integer("response_status"),
  error: text("error"),
  durationMs: integer("duration_ms").notNull(),
  createdAt: text("created_at").notNull(),
});

export const githubLinks = sqliteTable("github_links", {
  id: text("id").primaryKey(),
  accountId: text("account_id").notNull(),
  repository: text("repository").notNull().unique(),
  secret: text("secret").notNull(),
  createdAt: text("created_at").notNull(),
});

export const capsuleReviews = sqliteTable("capsule_reviews", {
  id: text("id").primaryKey(),
  capsuleName: text("capsule_name").notNull(),
  accountId: text("account_id").notNull(),
  stars: integer("stars").notNull(),
  text: text("text"),
  status: text("status").$type<"visible" | "hidden" | "removed">().notNull(),
  helpfulCount: integer("helpful_count").notNull().default(0),
  notHelpfulCount: integer("not_helpful_count").notNull().default(0),
  openReports: integer("open_reports").notNull().default(0),
  replyText: text("reply_text"),
  repliedAt: text("replied_at"),
  replyUpdatedAt: text("reply_updated_at"),
  moderatedBy: text("moderated_by"),
  moderatedAt: text("moderated_at"),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const reviewVotes = sqliteTable("review_votes", {
  reviewId: text("review_id").notNull(),
  accountId: text("account_id").notNull(),
  helpful: integer("helpful", { mode: "boolean" }).notNull(),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const reviewReports = sqliteTable("review_reports", {
  reviewId: text("review_id").notNull(),
  accountId: text("account_id").notNull(),
  reason: text("reason").notNull(),
  createdAt: text("created_at").notNull(),
  resolvedAt: text("resolved_at"),
});

export const collections = sqliteTable("collections", {
  id: text("id").primaryKey(),
  ownerId: text("owner_id"),
  title: text("title").notNull(),
  description: text("description").notNull().default(""),
  visibility: text("visibility").$type<"public" | "private">().notNull(),
  curated: integer("curated", { mode: "boolean" }).notNull().default(false),
  createdAt: text("created_at").notNull(),
  updatedAt: text("updated_at").notNull(),
});

export const collectionItems = sqliteTable("collection_items", {
  collectionId: text("collection_id").notNull(),
  capsuleName: text("capsule_name").notNull(),
  addedAt: text("added_at").notNull(),
});

export const featuredCapsules = sqliteTable("featured_capsules", {
  capsuleName: text("capsule_name").primaryKey(),
  position: integer("position").notNull(),
  featuredBy: text("featured_by"),
  featuredAt: text("featured_at").notNull(),
});

/** Security-relevant actions, append-only and hash-chained (audit/log.ts, migration 0010). */
export const auditLog = sqliteTable("audit_log", {
  seq: integer("seq").primaryKey({ autoIncrement: true }),
  id: text("id").notNull().unique(),
  at: text("at").notNull(),
  actor: text("actor").notNull(),
  action: text("action").notNull(),
  target: text("target").notNull(),
  details: text("details").notNull(),
  prevHash: text("prev_hash"),
  hash: text("hash"),
});
