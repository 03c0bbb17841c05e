-- The ticket ledger: every deleted ticket seen, one row per ticket and
-- deletion, with what it was listed as and where it stands. A run lists only
-- what changed (the newest deletions, down to the last run's high-water
-- mark) and decides the rest from here; a periodic reconcile walks the whole
-- view. The ledger is a summary that the chained rows (decisions, jobs,
-- outcomes) can rebuild: every state change is one of those rows, written in
-- the same transaction as the ledger's update.
CREATE TABLE ledger (
    ticket_id      INTEGER NOT NULL,
    deleted_at     TEXT    NOT NULL,            -- '' when the listing gave no readable time
    actor_id       INTEGER,
    actor_name     TEXT,
    previous_state TEXT,
    subject        TEXT,                        -- NULL unless audit.record_subjects = true
    subject_tags   TEXT,                        -- each subject pattern's fingerprint and + or -:
                                                -- decides subject rules without the subject
    first_seen     TEXT    NOT NULL,
    last_seen      TEXT    NOT NULL,            -- its last listing
    decision       TEXT,                        -- the latest recorded decision
    rule           TEXT,
    config_hash    TEXT,                        -- the config that made that decision
    state          TEXT    NOT NULL CHECK (state IN (
                       'kept', 'selected', 'purge_requested', 'purged', 'unknown',
                       'gone', 'left_view', 'restored', 'scrubbed', 'superseded')),
    state_at       TEXT    NOT NULL,
    requested_at   TEXT,                        -- its latest purge request
    PRIMARY KEY (ticket_id, deleted_at)
) WITHOUT ROWID;
CREATE INDEX ledger_live ON ledger (state)
    WHERE state IN ('kept', 'selected', 'purge_requested', 'purged', 'unknown');

-- A decision row keeps what the ledger decides from: the actor's name (a
-- rule can name actors) and the subject-pattern tags. Chained like the
-- other columns once set.
ALTER TABLE decisions ADD COLUMN actor_name TEXT;
ALTER TABLE decisions ADD COLUMN subject_tags TEXT;

-- How each run listed: backlog (a first run, oldest first up to the purge
-- horizon), refresh (the newest deletions, down to the mark) or reconcile
-- (the whole view), and the newest deletion it knows of after.
ALTER TABLE runs ADD COLUMN step TEXT CHECK (step IN ('backlog', 'refresh', 'reconcile'));
ALTER TABLE runs ADD COLUMN high_water TEXT;
-- Decision rows written by the run (decisions are recorded on change).
ALTER TABLE runs ADD COLUMN decisions_recorded INTEGER;

-- An existing history enters the ledger: each ticket's latest decision,
-- its state from the latest outcome recorded after it.
INSERT INTO ledger (ticket_id, deleted_at, actor_id, previous_state, subject,
                    first_seen, last_seen, decision, rule, config_hash, state, state_at)
SELECT d.ticket_id, COALESCE(d.deleted_at, ''), d.actor_id, d.previous_state, d.subject,
       (SELECT MIN(d2.decided_at) FROM decisions d2 WHERE d2.ticket_id = d.ticket_id),
       d.decided_at, d.decision, d.rule, r.config_hash,
       CASE COALESCE((SELECT o.outcome FROM outcomes o
                      WHERE o.ticket_id = d.ticket_id AND o.recorded_at >= d.decided_at
                      ORDER BY o.id DESC LIMIT 1), '')
           WHEN 'purged' THEN 'purged'
           WHEN 'unknown' THEN 'unknown'
           WHEN 'confirmed_gone' THEN 'gone'
           WHEN 'restored_elsewhere' THEN 'restored'
           WHEN 'restored' THEN 'restored'
           WHEN 'scrubbed_by_zendesk' THEN 'scrubbed'
           ELSE CASE WHEN d.decision IN ('purge', 'would_purge') THEN 'selected' ELSE 'kept' END
       END,
       d.decided_at
FROM decisions d JOIN runs r ON r.id = d.run_id
WHERE d.id = (SELECT MAX(d3.id) FROM decisions d3 WHERE d3.ticket_id = d.ticket_id);

-- Rows pruned by `[audit] keep_details`: details of tickets settled long
-- ago (decisions other than purge, outcomes that were no purge's). Each is
-- chained like any insert, so `audit verify` accepts exactly these rows as
-- gone; their digests stay in the chain entries that first covered them.
-- A purge's evidence (its decision, job and outcomes) is never pruned.
CREATE TABLE pruned (
    id        INTEGER PRIMARY KEY,
    tbl       TEXT    NOT NULL CHECK (tbl IN ('decisions', 'outcomes', 'ledger')),
    row_id    INTEGER NOT NULL,                 -- for 'ledger': the ticket id whose rows went
    run_id    INTEGER NOT NULL,                 -- the run the pruned row belonged to
    what      TEXT    NOT NULL,                 -- its decision or outcome
    pruned_at TEXT    NOT NULL
);
-- a row is pruned once; a ticket's ledger rows may go more than once (it
-- can come back and leave again)
CREATE UNIQUE INDEX pruned_row ON pruned (tbl, row_id) WHERE tbl <> 'ledger';
