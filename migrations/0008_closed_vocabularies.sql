-- The closed vocabularies: outcome, job status, request kind, decision,
-- trigger and run status each take only the values the code's enums name
-- (src/audit/kinds.rs; a unit test compares the two lists). SQLite cannot
-- add a CHECK to an existing table, so these triggers are the checks: a row
-- written with another value is refused. Rows already stored are left as
-- they are.

-- outcomes.outcome: purged, failed, unknown, not_sent, confirmed_gone, not_effective, still_present, restored, not_restored, restore_unknown, restored_elsewhere, scrubbed_by_zendesk, left_view
CREATE TRIGGER outcomes_outcome_check BEFORE INSERT ON outcomes
WHEN NEW.outcome NOT IN ('purged', 'failed', 'unknown', 'not_sent', 'confirmed_gone', 'not_effective', 'still_present', 'restored', 'not_restored', 'restore_unknown', 'restored_elsewhere', 'scrubbed_by_zendesk', 'left_view')
BEGIN
    SELECT RAISE(ABORT, 'outcomes.outcome is not one of its known values');
END;

-- jobs.status: pending, queued, working, completed, failed, killed, refused, rate_limited, unknown
CREATE TRIGGER jobs_status_check BEFORE INSERT ON jobs
WHEN NEW.status NOT IN ('pending', 'queued', 'working', 'completed', 'failed', 'killed', 'refused', 'rate_limited', 'unknown')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status is not one of its known values');
END;

CREATE TRIGGER jobs_status_check_update BEFORE UPDATE OF status ON jobs
WHEN NEW.status NOT IN ('pending', 'queued', 'working', 'completed', 'failed', 'killed', 'refused', 'rate_limited', 'unknown')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status is not one of its known values');
END;

-- jobs.kind: destroy_many, restore_many, restore
CREATE TRIGGER jobs_kind_check BEFORE INSERT ON jobs
WHEN NEW.kind NOT IN ('destroy_many', 'restore_many', 'restore')
BEGIN
    SELECT RAISE(ABORT, 'jobs.kind is not one of its known values');
END;

-- decisions.decision: purge, would_purge, keep_rule, keep_no_rule, keep_protected, keep_too_young, keep_unknown_age
CREATE TRIGGER decisions_decision_check BEFORE INSERT ON decisions
WHEN NEW.decision NOT IN ('purge', 'would_purge', 'keep_rule', 'keep_no_rule', 'keep_protected', 'keep_too_young', 'keep_unknown_age')
BEGIN
    SELECT RAISE(ABORT, 'decisions.decision is not one of its known values');
END;

-- runs.trigger: cron, manual, demo, restore, manual_purge
CREATE TRIGGER runs_trigger_check BEFORE INSERT ON runs
WHEN NEW.trigger NOT IN ('cron', 'manual', 'demo', 'restore', 'manual_purge')
BEGIN
    SELECT RAISE(ABORT, 'runs.trigger is not one of its known values');
END;

-- runs.status: running, completed, failed, interrupted
CREATE TRIGGER runs_status_check BEFORE INSERT ON runs
WHEN NEW.status NOT IN ('running', 'completed', 'failed', 'interrupted')
BEGIN
    SELECT RAISE(ABORT, 'runs.status is not one of its known values');
END;

CREATE TRIGGER runs_status_check_update BEFORE UPDATE OF status ON runs
WHEN NEW.status NOT IN ('running', 'completed', 'failed', 'interrupted')
BEGIN
    SELECT RAISE(ABORT, 'runs.status is not one of its known values');
END;
