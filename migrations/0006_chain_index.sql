-- Finds a row's latest chained state quickly: writers check the states of
-- runs and jobs before they trust them (a row changed outside is refused).
CREATE INDEX audit_chain_row ON audit_chain (tbl, first_id, seq);
