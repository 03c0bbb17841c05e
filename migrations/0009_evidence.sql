-- Evidence for people who sign off (issue 13).

-- Each distinct config a run used, stored once: its settings in words and
-- as data (rules, safety, schedule, audit; never a credential). Chained like
-- runs: a version rewritten later is named by `audit verify`.
CREATE TABLE config_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    first_run INTEGER NOT NULL,
    first_used TEXT NOT NULL,
    settings TEXT NOT NULL
);

-- What ran each run: chained with the run's row once set (older runs keep
-- their digests).
ALTER TABLE runs ADD COLUMN host TEXT;
ALTER TABLE runs ADD COLUMN os_user TEXT;
ALTER TABLE runs ADD COLUMN program_version TEXT;

-- Chain heads. With `[audit] signing_key_file`, every transaction that
-- appends to the chain records, before it commits, the head it leaves
-- (entry `seq`, its hash) and the first entry it appended (`from_seq`),
-- signed: a head per commit, so nothing committed is left unsigned, and the
-- heads must follow one another without a gap (an entry appended without
-- the key shows as one). Without a key only each run's end is recorded,
-- unsigned, for its certificate. Not chained itself (a chained row would
-- move the head it records): a signature is its own proof, checked by
-- `audit verify --public-key`.
CREATE TABLE chain_heads (
    seq INTEGER PRIMARY KEY,
    from_seq INTEGER NOT NULL,
    run_id INTEGER,
    kind TEXT NOT NULL CHECK (kind IN ('commit', 'end', 'interrupted')),
    head TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    key_id TEXT,
    signature TEXT,
    CHECK ((key_id IS NULL) = (signature IS NULL))
);
CREATE INDEX chain_heads_run ON chain_heads (run_id, kind);
