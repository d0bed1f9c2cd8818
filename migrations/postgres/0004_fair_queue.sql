-- Fair dispatch across replicas: start-time fair queueing (the gauge's rule in one process).
--
-- Each job gets its start tag `vtag` at insert: GREATEST(V, the owner's last finish tag), where V
-- is the least tag among the jobs held by a replica (claimed and not finished), or, when none is,
-- the largest finish tag handed out (`dispatch_clock`). The owner's finish tag moves on by
-- 1/weight (`key_clock`). Inserts take the admission advisory lock, so the clocks move in one
-- order. The claim takes the queued jobs in (vtag, created_at) order, skipping owners at their
-- max_concurrent. Jobs queued before this migration keep tag 0: they go first, in the order they
-- were accepted.

ALTER TABLE jobs ADD COLUMN vtag DOUBLE PRECISION NOT NULL DEFAULT 0;

CREATE TABLE key_clock (
    owner       TEXT             PRIMARY KEY,
    last_finish DOUBLE PRECISION NOT NULL
);

-- One row: the largest finish tag handed out.
CREATE TABLE dispatch_clock (
    one        BOOLEAN          PRIMARY KEY DEFAULT TRUE CHECK (one),
    max_finish DOUBLE PRECISION NOT NULL
);
INSERT INTO dispatch_clock (one, max_finish) VALUES (TRUE, 0);

-- The shared queue in fair order: the claim walks it from the front with SKIP LOCKED.
CREATE INDEX jobs_fair_queue ON jobs (vtag, created_at) WHERE status = 'queued' AND replica IS NULL;

-- The jobs replicas hold, by owner (per-key max_concurrent) and by tag (V).
CREATE INDEX jobs_held_by_owner ON jobs (owner) WHERE replica IS NOT NULL AND finished_at IS NULL;
CREATE INDEX jobs_held_by_vtag ON jobs (vtag) WHERE replica IS NOT NULL AND finished_at IS NULL;
