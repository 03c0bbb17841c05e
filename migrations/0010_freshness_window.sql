-- The freshness window of each purge request (issue 18): when the read that
-- cleared it was answered, and how long after that answer the request was
-- handed to the connection, in microseconds. Set once the request has left
-- (a state change of the job, chained with its state: rows recorded before
-- this migration keep their digests).
ALTER TABLE jobs ADD COLUMN fresh_read_at TEXT;
ALTER TABLE jobs ADD COLUMN send_window_us INTEGER;
-- When the read after the request was answered (the bracket: a ticket it
-- shows deleted again is in doubt); NULL when none was made (it failed).
ALTER TABLE jobs ADD COLUMN after_read_at TEXT;

-- A purge request is recorded before the freshness read that clears it, so
-- that nothing but the send follows the read. A request the read does not
-- clear whole is `withdrawn`: never sent (its tickets go out, if at all,
-- under a new row).
DROP TRIGGER jobs_status_check;
DROP TRIGGER jobs_status_check_update;

-- jobs.status: pending, queued, working, completed, failed, killed, refused, rate_limited, unknown, withdrawn
CREATE TRIGGER jobs_status_check BEFORE INSERT ON jobs
WHEN NEW.status NOT IN ('pending', 'queued', 'working', 'completed', 'failed', 'killed', 'refused', 'rate_limited', 'unknown', 'withdrawn')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status is not one of its known values');
END;

CREATE TRIGGER jobs_status_check_update BEFORE UPDATE OF status ON jobs
WHEN NEW.status NOT IN ('pending', 'queued', 'working', 'completed', 'failed', 'killed', 'refused', 'rate_limited', 'unknown', 'withdrawn')
BEGIN
    SELECT RAISE(ABORT, 'jobs.status is not one of its known values');
END;
