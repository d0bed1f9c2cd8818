-- What a job's run left for a next turn (its transcript and workspace changes, see
-- `continue_from`), and its size, which counts in the byte budget of finished jobs. Forgotten
-- with its job.
ALTER TABLE jobs ADD COLUMN session BLOB;
ALTER TABLE jobs ADD COLUMN session_bytes INTEGER NOT NULL DEFAULT 0;
