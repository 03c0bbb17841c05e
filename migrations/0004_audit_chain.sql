-- Tamper evidence: every insert into runs, decisions, jobs and outcomes
-- appends an entry that hashes the rows it added (their columns that never
-- change) together with the previous entry's hash. `zd-retention audit
-- verify` recomputes the chain and names the first row changed or removed.
CREATE TABLE audit_chain (
    seq      INTEGER PRIMARY KEY,
    tbl      TEXT    NOT NULL,
    first_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL,
    digests  TEXT    NOT NULL,   -- 16 hex characters per row, in id order
    prev     TEXT    NOT NULL,   -- the previous entry's hash ("genesis" first)
    hash     TEXT    NOT NULL    -- SHA-256 of prev, tbl, the id range and the digests
);
