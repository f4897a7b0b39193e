-- Messages a queue gave up on (poison or retries exhausted), kept until an operator replays them.
CREATE TABLE dead_letters (
  id TEXT PRIMARY KEY,
  queue TEXT NOT NULL,
  body TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX dead_letters_queue ON dead_letters(queue, created_at);
