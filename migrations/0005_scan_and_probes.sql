-- How each run walked the deleted view, and what `zd-retention probe` found.
-- Outcomes gain three values (the column is free text): restored_elsewhere
-- (gone from the deleted view, found among active tickets), scrubbed_by_zendesk
-- (an unknown outcome, gone, deleted more than 30 days ago) and
-- restore_unknown (a restore whose answer was lost and could not be looked up).

ALTER TABLE runs ADD COLUMN scan TEXT;                -- sorted | full (NULL for manual runs)
ALTER TABLE runs ADD COLUMN scan_reason TEXT;         -- why: the order proof, or why there was none
ALTER TABLE runs ADD COLUMN max_listing_age_ms INTEGER; -- longest time from a ticket's last listing to its destroy_many

-- One probe of an account: read-only findings, as JSON (never a credential).
CREATE TABLE probes (
    id         INTEGER PRIMARY KEY,
    probed_at  TEXT NOT NULL,
    base_url   TEXT NOT NULL,
    findings   TEXT NOT NULL
);
