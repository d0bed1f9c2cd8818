-- The webhooks of jobs submitted with a `callback_url` (or under WEBHOOK_URL): two per job
-- (`started`, `ended`), inserted with the job, so no restart loses one. Every replica's sender
-- claims those due with FOR UPDATE SKIP LOCKED and a lease (the database's clock), so replicas
-- never send one at once, and a crashed sender's claim runs out and the webhook is tried again:
-- at least once. Forgotten with its job.
CREATE TABLE webhooks (
    id          TEXT   PRIMARY KEY,
    job_id      TEXT   NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    -- `started` or `ended`.
    kind        TEXT   NOT NULL,
    url         TEXT   NOT NULL,
    -- `pending`, `delivered`, `failed` or `skipped`.
    state       TEXT   NOT NULL DEFAULT 'pending',
    attempts    BIGINT NOT NULL DEFAULT 0,
    -- Every try.
    tries       JSONB  NOT NULL DEFAULT '[]',
    -- Unix microseconds of the next try.
    next_at     BIGINT NOT NULL,
    -- Unix microseconds until which a sender holds it.
    lease_until BIGINT
);

CREATE INDEX webhooks_due ON webhooks (next_at) WHERE state = 'pending';
CREATE INDEX webhooks_by_job ON webhooks (job_id);
