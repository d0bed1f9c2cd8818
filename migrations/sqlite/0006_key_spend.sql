-- What each key (a token name) spent per budget window: the runs' reported cost and tokens,
-- added by each run's end (INSERT ... ON CONFLICT DO UPDATE SET usd = usd + excluded.usd), so a
-- restart keeps it. Times are Unix microseconds; a key's rows of windows that ended are deleted
-- when it is next charged.
CREATE TABLE key_spend (
    owner        TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    usd          REAL    NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, window_start, window_end)
) WITHOUT ROWID;
