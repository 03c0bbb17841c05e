-- The freshness window of each purge request (issue 18): when the read that
-- cleared it was answered, and how long after that answer the request was
-- handed to the connection, in microseconds. Set once the request has left
-- (a state change of the job, chained with its state: rows recorded before
-- this migration keep their digests).
ALTER TABLE jobs ADD COLUMN fresh_read_at TEXT;
ALTER TABLE jobs ADD COLUMN send_window_us INTEGER;
