-- KAMACHIQ projects: the coordinator Durable Object owns each project's state; D1 keeps an index for listings.
CREATE TABLE projects (
  id TEXT PRIMARY KEY,
  owner_id TEXT NOT NULL,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX projects_owner ON projects(owner_id, created_at);

-- Tasks waiting for a human decision at a quality gate (written and cleared by the coordinator).
CREATE TABLE review_tasks (
  project_id TEXT NOT NULL,
  task_id TEXT NOT NULL,
  owner_id TEXT NOT NULL,
  capsule TEXT NOT NULL,
  score REAL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (project_id, task_id)
);
CREATE INDEX review_tasks_owner ON review_tasks(owner_id, created_at);

-- Jobs for runner capsules, claimed by external runner processes under a lease.
CREATE TABLE runner_jobs (
  attempt_id TEXT PRIMARY KEY,
  project_id TEXT NOT NULL,
  task_id TEXT NOT NULL,
  owner_id TEXT NOT NULL,
  payload TEXT NOT NULL,
  status TEXT NOT NULL,
  runner_id TEXT,
  lease_until TEXT,
  claims INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  finished_at TEXT
);
CREATE INDEX runner_jobs_status ON runner_jobs(status, created_at);
CREATE INDEX runner_jobs_owner ON runner_jobs(owner_id, status);
