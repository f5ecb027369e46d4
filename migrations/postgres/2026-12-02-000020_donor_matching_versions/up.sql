-- Which donors' matching inputs (the donor row, deferrals, donations, collections,
-- stimulations) changed, in commit order: every instance's candidates index reloads the donors
-- whose seq is above the last one it read. Kept by triggers, so every write, whatever its code
-- path, bumps it in its own transaction. The clock row's lock is held to commit, so seqs become
-- visible in increasing order: a reader that saw seq n has seen every change below n. The
-- triggers are deferred to commit, so that lock is taken last and held only while committing
-- (taken at the first write, it could deadlock with row locks the transaction takes later).
CREATE TABLE matching_clock (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO matching_clock (id, seq) VALUES (1, 0);

CREATE TABLE donor_matching_versions (
    donor_id BIGINT PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX donor_matching_versions_seq ON donor_matching_versions (seq);

-- One seq per transaction (kept in a transaction-local setting): a bulk write does not update
-- the clock row once per row, and its changes become visible together anyway.
CREATE FUNCTION donor_matching_changed(donor BIGINT) RETURNS void AS $$
DECLARE
    next BIGINT := NULLIF(current_setting('granulo.matching_seq', true), '')::BIGINT;
BEGIN
    IF next IS NULL THEN
        UPDATE matching_clock SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO next;
        PERFORM set_config('granulo.matching_seq', next::TEXT, true);
    END IF;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (donor, next)
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION donors_matching_trigger() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM donor_matching_changed(OLD.id);
    ELSE
        PERFORM donor_matching_changed(NEW.id);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION donor_rows_matching_trigger() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM donor_matching_changed(OLD.donor_id);
    ELSE
        PERFORM donor_matching_changed(NEW.donor_id);
        IF TG_OP = 'UPDATE' AND OLD.donor_id <> NEW.donor_id THEN
            PERFORM donor_matching_changed(OLD.donor_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER donors_matching AFTER INSERT OR UPDATE OR DELETE ON donors
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION donors_matching_trigger();
CREATE CONSTRAINT TRIGGER deferrals_matching AFTER INSERT OR UPDATE OR DELETE ON deferrals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION donor_rows_matching_trigger();
CREATE CONSTRAINT TRIGGER donations_matching AFTER INSERT OR UPDATE OR DELETE ON donations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION donor_rows_matching_trigger();
CREATE CONSTRAINT TRIGGER collections_matching AFTER INSERT OR UPDATE OR DELETE ON collections
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION donor_rows_matching_trigger();
CREATE CONSTRAINT TRIGGER stimulations_matching AFTER INSERT OR UPDATE OR DELETE ON stimulations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION donor_rows_matching_trigger();
