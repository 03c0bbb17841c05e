-- The audit log: every run, every decision, every job sent to Zendesk and
-- every per-ticket outcome. Times are RFC 3339 UTC text with milliseconds
-- ("2026-11-28T15:40:00.123Z"), which sort as they read.

-- One execution of the purge cycle.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger       TEXT    NOT NULL,             -- cron | manual | demo
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    dry_run       INTEGER NOT NULL,             -- 1 when nothing may be written to Zendesk
    config_hash   TEXT    NOT NULL,             -- SHA-256 of the config file's text
    status        TEXT    NOT NULL,             -- running | completed | failed | interrupted
    scanned       INTEGER NOT NULL DEFAULT 0,   -- tickets listed and decided
    matched       INTEGER NOT NULL DEFAULT 0,   -- tickets a purge rule selected
    purged        INTEGER NOT NULL DEFAULT 0,   -- reported purged by a completed job
    failed        INTEGER NOT NULL DEFAULT 0,   -- in failed or killed jobs, or refused
    unknown       INTEGER NOT NULL DEFAULT 0,   -- outcome to be settled by a later scan
    list_requests INTEGER NOT NULL DEFAULT 0,
    early_stop    INTEGER NOT NULL DEFAULT 0,   -- 1 when the sorted scan stopped early
    error         TEXT
);
CREATE INDEX runs_started ON runs (started_at);

-- What the rules decided for each ticket a run listed.
CREATE TABLE decisions (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs (id),
    ticket_id      INTEGER NOT NULL,
    deleted_at     TEXT,
    actor_id       INTEGER,
    previous_state TEXT,
    subject        TEXT,                        -- NULL unless audit.record_subjects = true
    rule           TEXT,                        -- the rule that decided, if any
    decision       TEXT    NOT NULL,            -- purge | would_purge | keep_rule | keep_no_rule
                                                -- | keep_protected | keep_too_young | keep_unknown_age
    decided_at     TEXT    NOT NULL
);
CREATE INDEX decisions_ticket ON decisions (ticket_id);
CREATE INDEX decisions_run ON decisions (run_id, decision);

-- Each write request: recorded before it is sent, completed when answered.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs (id),
    kind           TEXT    NOT NULL,            -- destroy_many | restore_many
    zendesk_job_id TEXT,                        -- NULL until Zendesk answers (restores have none)
    ticket_ids     TEXT    NOT NULL,            -- comma-separated, as sent
    ticket_count   INTEGER NOT NULL,
    recorded_at    TEXT    NOT NULL,            -- written before the request left
    answered_at    TEXT,
    finished_at    TEXT,
    status         TEXT    NOT NULL,            -- pending | queued | working | completed | failed
                                                -- | killed | refused | unknown
    message        TEXT
);
CREATE INDEX jobs_run ON jobs (run_id);
CREATE INDEX jobs_open ON jobs (status) WHERE status IN ('pending', 'queued', 'working');

-- What became of each ticket, as far as Zendesk told or a later scan proved.
CREATE TABLE outcomes (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    job_id      INTEGER REFERENCES jobs (id),
    ticket_id   INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,               -- purged | failed | unknown | not_sent
                                                -- | confirmed_gone | not_effective | restored
    detail      TEXT,
    recorded_at TEXT    NOT NULL
);
CREATE INDEX outcomes_ticket ON outcomes (ticket_id, id);
CREATE INDEX outcomes_run ON outcomes (run_id);
