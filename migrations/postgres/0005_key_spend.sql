-- What each key (a token name) spent per budget window: the runs' reported cost and tokens.
-- Every replica adds to the same row in one statement (INSERT ... ON CONFLICT DO UPDATE SET
-- usd = key_spend.usd + excluded.usd), so replicas charging at once all count and none
-- overwrites another. Times are Unix microseconds; a key's rows of windows that ended are deleted
-- when it is next charged.
CREATE TABLE key_spend (
    owner        TEXT             NOT NULL,
    window_start BIGINT           NOT NULL,
    window_end   BIGINT           NOT NULL,
    usd          DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens       BIGINT           NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, window_start, window_end)
);
