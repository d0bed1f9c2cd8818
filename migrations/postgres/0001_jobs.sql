-- The shared store of several replicas: one queue, one job store, their leases.
--
-- `seq` is the order jobs were accepted in, which is the order they start in. Times of jobs are
-- Unix microseconds (as in the SQLite store); leases use the database's clock, so replicas whose
-- clocks disagree still agree on who is alive.

CREATE TABLE jobs (
    seq              BIGSERIAL PRIMARY KEY,
    job_id           TEXT    NOT NULL UNIQUE,
    -- The caller's token name. Also what a per-key fair claim would partition the queue by.
    owner            TEXT    NOT NULL,
    -- The record's status: `queued` (claimed or not), `running`, or a terminal one.
    status           TEXT    NOT NULL,
    -- The replica that claimed the job; NULL while it waits in the shared queue.
    replica          TEXT,
    -- DELETE /jobs/{id} on another replica asked the one running the job to stop it.
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT  NOT NULL,
    finished_at      BIGINT,
    record_bytes     BIGINT  NOT NULL,
    event_bytes      BIGINT  NOT NULL DEFAULT 0,
    summary          TEXT    NOT NULL,
    record           TEXT    NOT NULL
);

-- GET /jobs: one owner's jobs, newest first, resumed after a cursor.
CREATE INDEX jobs_by_owner ON jobs (owner, created_at DESC, job_id DESC);

-- Eviction: finished jobs, oldest finished first.
CREATE INDEX jobs_finished ON jobs (finished_at, job_id) WHERE finished_at IS NOT NULL;

-- Jobs not finished, in the order they were accepted.
CREATE INDEX jobs_unfinished ON jobs (seq) WHERE finished_at IS NULL;

-- The shared queue: the claim takes the first unclaimed jobs of this range with
-- FOR UPDATE SKIP LOCKED, so replicas claiming at once never wait for each other.
CREATE INDEX jobs_queue ON jobs (seq) WHERE status = 'queued' AND replica IS NULL;

-- The same queue per caller, so a claim that shares slots fairly between callers can take the
-- head of each caller's queue in one indexed statement.
CREATE INDEX jobs_queue_by_owner ON jobs (owner, seq) WHERE status = 'queued' AND replica IS NULL;

-- What each replica holds, to find the jobs of a dead one.
CREATE INDEX jobs_claimed ON jobs (replica) WHERE finished_at IS NULL AND replica IS NOT NULL;

-- Each job's event log, numbered by the task running the job from 0. Forgotten with its job.
CREATE TABLE job_events (
    job_id TEXT   NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    kind   TEXT   NOT NULL,
    data   TEXT   NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- The replicas alive: each renews its lease; one whose lease ran out is taken for dead.
CREATE TABLE replicas (
    replica_id  TEXT        PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wakes the replicas when a job joins the queue (new, or queued again).
CREATE FUNCTION claude_gateway_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('claude_gateway_queue', '');
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_queued AFTER INSERT OR UPDATE OF status, replica ON jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.replica IS NULL)
    EXECUTE FUNCTION claude_gateway_queued();

-- Tells the replica running a job that a caller cancelled it elsewhere.
CREATE FUNCTION claude_gateway_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('claude_gateway_cancel', NEW.job_id);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_cancel AFTER UPDATE OF cancel_requested ON jobs
    FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)
    EXECUTE FUNCTION claude_gateway_cancel();

-- Wakes the followers of a job's events on every replica (one notice per job and transaction:
-- PostgreSQL folds identical notices of one transaction).
CREATE FUNCTION claude_gateway_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('claude_gateway_events', NEW.job_id);
    RETURN NULL;
END $$;

CREATE TRIGGER job_events_stored AFTER INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION claude_gateway_events();
