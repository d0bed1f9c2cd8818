-- What a job's run left for a next turn (its transcript and workspace changes, see
-- `continue_from`), and its size, which counts in the byte budget of finished jobs. Forgotten
-- with its job.
ALTER TABLE jobs ADD COLUMN session BYTEA;
ALTER TABLE jobs ADD COLUMN session_bytes BIGINT NOT NULL DEFAULT 0;

-- Chat conversations kept for their next request (`session_id` of /v1/chat/completions): the
-- session of the last turn, by handle, shared by every replica. Forgotten after JOB_TTL_SECONDS
-- without a turn, and past MAX_FINISHED_JOBS of them, the least recently used first.
CREATE TABLE chat_sessions (
    handle     TEXT   PRIMARY KEY,
    owner      TEXT   NOT NULL,
    -- Unix microseconds of the last turn.
    updated_at BIGINT NOT NULL,
    session    BYTEA  NOT NULL
);

CREATE INDEX chat_sessions_by_age ON chat_sessions (updated_at);
