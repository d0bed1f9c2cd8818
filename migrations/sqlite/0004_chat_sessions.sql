-- Chat conversations kept for their next request (`session_id` of /v1/chat/completions): the
-- session of the last turn, by handle. Forgotten after JOB_TTL_SECONDS without a turn, and past
-- MAX_FINISHED_JOBS of them, the least recently used first.
CREATE TABLE chat_sessions (
    handle     TEXT    PRIMARY KEY,
    owner      TEXT    NOT NULL,
    -- Unix microseconds of the last turn.
    updated_at INTEGER NOT NULL,
    session    BLOB    NOT NULL
) WITHOUT ROWID;

CREATE INDEX chat_sessions_by_age ON chat_sessions (updated_at);
