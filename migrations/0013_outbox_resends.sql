-- How many times an unconfirmed outbox row was sent again: each further resend waits twice as long as the one
-- before (OUTBOX_RESEND_MS, then twice that, ... at most 64 times it), so an analytics outage of hours is not
-- a resend of every waiting row every two minutes.
ALTER TABLE outbox ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
