-- Each job's event log (GET /jobs/{id}/events), numbered by the job's task from 0. Forgotten
-- with its job.
CREATE TABLE job_events (
    job_id TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    data   TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- What a job's events hold, kept beside its record for the byte budget.
ALTER TABLE jobs ADD COLUMN event_bytes INTEGER NOT NULL DEFAULT 0;
