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

-- The chain's head at each run's end, signed when `[audit]
-- signing_key_file` is set. Not itself chained (a chained row would move
-- the head it records); a signature is its own proof, and `audit verify
-- --public-key` checks each one and that no ended run lacks one.
CREATE TABLE chain_heads (
    run_id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    head TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    key_id TEXT,
    signature TEXT,
    CHECK ((key_id IS NULL) = (signature IS NULL))
);
