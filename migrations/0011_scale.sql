-- Scale to the largest accounts (issue 19): a run reads from the ledger
-- only the rows whose decision can have moved, never the whole ledger.

-- When the live ledger's kept and selected rows were last all decided, and
-- under which policy. A refresh under the same policy decides again only
-- the rows an age threshold of that policy crossed since (and the selected
-- ones); another policy decides every row again, in chunks. Not evidence
-- (the decisions are): a row changed here only makes a run decide more or
-- fewer rows again, each from its latest decision, never purge one no rule
-- selects.
CREATE TABLE ledger_decided (
    run_id     INTEGER PRIMARY KEY,
    decided_at TEXT NOT NULL,
    policy     TEXT NOT NULL
);

-- A whole-view check that spans runs: each run, after its refresh, walks
-- on from `cursor` for its share of the listing quota. When the walk ends,
-- the live rows no listing saw since `started_at` are settled (lookups and
-- a newest-first read), as after a reconcile.
CREATE TABLE view_checks (
    id            INTEGER PRIMARY KEY,
    started_at    TEXT NOT NULL,
    started_run   INTEGER NOT NULL,
    next_url      TEXT,                 -- path and query of the next page; NULL before the first
    next_page     INTEGER NOT NULL DEFAULT 1,
    pages         INTEGER NOT NULL DEFAULT 0,
    listed        INTEGER NOT NULL DEFAULT 0,
    runs          INTEGER NOT NULL DEFAULT 0,
    walked        INTEGER NOT NULL DEFAULT 0,  -- 1 once a page said there is no more
    finished_at   TEXT,                 -- the walk's end, settled
    finished_run  INTEGER,
    abandoned     TEXT                  -- why it was given up (a broken listing): the next one starts over
);

-- Purge latency: when each purged ticket became purgeable (its deletion
-- plus its rule's age, or safety.min_age) and when its request left.
CREATE TABLE purge_latency (
    job_id         INTEGER NOT NULL,
    ticket_id      INTEGER NOT NULL,
    purgeable_at   TEXT NOT NULL,
    sent_at        TEXT NOT NULL,
    latency_ms     INTEGER NOT NULL
);
CREATE INDEX purge_latency_sent ON purge_latency (sent_at);
CREATE INDEX purge_latency_job ON purge_latency (job_id);

-- The rows a refresh decides again: by deletion time (an age threshold
-- crossed) and by last sighting (what a whole walk did not list).
CREATE INDEX ledger_by_deletion ON ledger (deleted_at)
    WHERE state IN ('kept', 'selected');
CREATE INDEX ledger_by_sighting ON ledger (last_seen)
    WHERE state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown');

-- Rows per ledger state, kept by triggers: the metrics and `audit ledger`
-- read them after every run without counting a million rows.
CREATE TABLE ledger_state_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO ledger_state_counts SELECT state, COUNT(*) FROM ledger GROUP BY state;
CREATE TRIGGER ledger_count_insert AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER ledger_count_delete AFTER DELETE ON ledger BEGIN
    UPDATE ledger_state_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER ledger_count_update AFTER UPDATE OF state ON ledger
WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE ledger_state_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO ledger_state_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
