-- Indexes for the audit questions asked at scale: purges per rule per day
-- (covering), outcomes per kind and time.
CREATE INDEX decisions_day_rule ON decisions (decision, decided_at, rule);
CREATE INDEX outcomes_kind ON outcomes (outcome, recorded_at);
