-- Decisions per run, kind and rule, written when a run finishes, so that
-- "audit run" and "stats --by rule" read thousands of rows, not millions.
CREATE TABLE run_decision_counts (
    run_id   INTEGER NOT NULL REFERENCES runs (id),
    decision TEXT    NOT NULL,
    rule     TEXT,
    count    INTEGER NOT NULL
);
CREATE INDEX run_decision_counts_run ON run_decision_counts (run_id);

INSERT INTO run_decision_counts (run_id, decision, rule, count)
SELECT run_id, decision, rule, COUNT(*) FROM decisions GROUP BY run_id, decision, rule;
