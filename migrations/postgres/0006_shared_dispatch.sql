-- What replicas share of dispatch besides the queue: the upstream pause, and each owner's count
-- of jobs held by replicas (so `max_concurrent` holds across replicas claiming at once).

-- One row: dispatch is paused until `until_at` (Unix microseconds) because the account behind
-- the CLI is rate-limited. A replica whose run was refused moves it later (never earlier:
-- GREATEST); every replica claims nothing while it is in the future, and reads it into its own
-- pause (so its /health shows it and its chat runs wait too). It lifts by itself: nothing
-- writes it back.
CREATE TABLE dispatch_pause (
    one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    until_at BIGINT  NOT NULL
);
INSERT INTO dispatch_pause (one, until_at) VALUES (TRUE, 0);

-- Each owner's jobs held by a replica (claimed, not finished), kept by the trigger below on
-- every change of `replica` or `finished_at`: a claim, a finish, a job put back in the queue at
-- a drain, a restart or when a dead replica's jobs are settled. The claim locks the owner's row
-- (FOR UPDATE) and takes a job only while `running` is below the owner's `max_concurrent`, so
-- two replicas claiming at once for one owner take turns on that row and the second sees the
-- first's job.
CREATE TABLE key_running (
    owner   TEXT   PRIMARY KEY,
    running BIGINT NOT NULL DEFAULT 0
);
INSERT INTO key_running (owner, running)
    SELECT owner, COUNT(*) FILTER (WHERE replica IS NOT NULL AND finished_at IS NULL)
    FROM jobs GROUP BY owner;

CREATE FUNCTION claude_gateway_key_running() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_held BOOLEAN := FALSE;
    is_held  BOOLEAN := FALSE;
    owner_of TEXT;
    delta    BIGINT;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was_held := OLD.replica IS NOT NULL AND OLD.finished_at IS NULL;
        owner_of := OLD.owner;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        is_held := NEW.replica IS NOT NULL AND NEW.finished_at IS NULL;
        owner_of := NEW.owner;
    END IF;
    delta := is_held::INT - was_held::INT;
    IF delta = 0 THEN
        -- A new job, queued: its owner's row exists from now on (the claim locks it), without
        -- locking a row that exists already.
        IF TG_OP = 'INSERT' THEN
            INSERT INTO key_running (owner, running) VALUES (owner_of, 0)
                ON CONFLICT (owner) DO NOTHING;
        END IF;
        RETURN NULL;
    END IF;
    INSERT INTO key_running (owner, running) VALUES (owner_of, GREATEST(delta, 0))
        ON CONFLICT (owner) DO UPDATE SET running = GREATEST(key_running.running + delta, 0);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_key_running_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION claude_gateway_key_running();
CREATE TRIGGER jobs_key_running_update AFTER UPDATE OF replica, finished_at ON jobs
    FOR EACH ROW
    WHEN ((OLD.replica IS NOT NULL AND OLD.finished_at IS NULL)
          IS DISTINCT FROM (NEW.replica IS NOT NULL AND NEW.finished_at IS NULL))
    EXECUTE FUNCTION claude_gateway_key_running();
CREATE TRIGGER jobs_key_running_delete AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.replica IS NOT NULL AND OLD.finished_at IS NULL)
    EXECUTE FUNCTION claude_gateway_key_running();

-- A key's unfinished jobs across replicas, for /v1/quota and the rate-limit headers.
CREATE INDEX jobs_unfinished_by_owner ON jobs (owner) WHERE finished_at IS NULL;
