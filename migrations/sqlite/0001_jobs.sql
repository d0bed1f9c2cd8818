-- Job records. `seq` is the order jobs were accepted in: the queue order after a restart.
-- Times are Unix microseconds. `finished_at` is set exactly when the status is terminal, so
-- "unfinished" and "finished, oldest first" are both one index range.
CREATE TABLE jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT    NOT NULL UNIQUE,
    owner        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    -- What the record holds (its JSON), for the byte budget of finished jobs.
    record_bytes INTEGER NOT NULL,
    -- The listing's view of the job (JSON), read without the large fields.
    summary      TEXT    NOT NULL,
    -- The whole record (JSON).
    record       TEXT    NOT NULL
);

-- GET /jobs: one owner's jobs, newest first, resumed after a cursor.
CREATE INDEX jobs_by_owner ON jobs (owner, created_at DESC, job_id DESC);

-- Eviction: finished jobs, oldest finished first.
CREATE INDEX jobs_finished ON jobs (finished_at, job_id) WHERE finished_at IS NOT NULL;

-- Recovery: jobs not finished, in the order they were accepted.
CREATE INDEX jobs_unfinished ON jobs (seq) WHERE finished_at IS NULL;
