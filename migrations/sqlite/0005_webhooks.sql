-- The webhooks of jobs submitted with a `callback_url` (or under WEBHOOK_URL): two per job
-- (`started`, `ended`), inserted with the job, so no restart loses one. A sender claims those due
-- (a lease, so a crashed sender's claim runs out and the webhook is tried again: at least once),
-- and records each try. Forgotten with its job.
CREATE TABLE webhooks (
    id          TEXT    PRIMARY KEY,
    job_id      TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    -- `started` or `ended`.
    kind        TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    -- `pending`, `delivered`, `failed` or `skipped`.
    state       TEXT    NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- Every try, as a JSON array.
    tries       TEXT    NOT NULL DEFAULT '[]',
    -- Unix microseconds of the next try.
    next_at     INTEGER NOT NULL,
    -- Unix microseconds until which a sender holds it.
    lease_until INTEGER
) WITHOUT ROWID;

CREATE INDEX webhooks_due ON webhooks (next_at) WHERE state = 'pending';
CREATE INDEX webhooks_by_job ON webhooks (job_id);
