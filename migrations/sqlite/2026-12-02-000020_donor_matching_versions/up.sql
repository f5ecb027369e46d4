-- Which donors' matching inputs (the donor row, deferrals, donations, collections,
-- stimulations) changed, in commit order: every instance's candidates index reloads the donors
-- whose seq is above the last one it read. Kept by triggers, so every write, whatever its code
-- path, bumps it in its own transaction.
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

CREATE TRIGGER donors_matching_insert AFTER INSERT ON donors BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER donors_matching_update AFTER UPDATE ON donors BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER donors_matching_delete AFTER DELETE ON donors BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER deferrals_matching_insert AFTER INSERT ON deferrals BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER deferrals_matching_update AFTER UPDATE ON deferrals BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
-- A row moved to another donor changes the old donor's inputs too.
CREATE TRIGGER deferrals_matching_move AFTER UPDATE OF donor_id ON deferrals WHEN OLD.donor_id <> NEW.donor_id BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER deferrals_matching_delete AFTER DELETE ON deferrals BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER donations_matching_insert AFTER INSERT ON donations BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER donations_matching_update AFTER UPDATE ON donations BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
-- A row moved to another donor changes the old donor's inputs too.
CREATE TRIGGER donations_matching_move AFTER UPDATE OF donor_id ON donations WHEN OLD.donor_id <> NEW.donor_id BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER donations_matching_delete AFTER DELETE ON donations BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER collections_matching_insert AFTER INSERT ON collections BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER collections_matching_update AFTER UPDATE ON collections BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
-- A row moved to another donor changes the old donor's inputs too.
CREATE TRIGGER collections_matching_move AFTER UPDATE OF donor_id ON collections WHEN OLD.donor_id <> NEW.donor_id BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER collections_matching_delete AFTER DELETE ON collections BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER stimulations_matching_insert AFTER INSERT ON stimulations BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER stimulations_matching_update AFTER UPDATE ON stimulations BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (NEW.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
-- A row moved to another donor changes the old donor's inputs too.
CREATE TRIGGER stimulations_matching_move AFTER UPDATE OF donor_id ON stimulations WHEN OLD.donor_id <> NEW.donor_id BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
CREATE TRIGGER stimulations_matching_delete AFTER DELETE ON stimulations BEGIN
    UPDATE matching_clock SET seq = seq + 1 WHERE id = 1;
    INSERT INTO donor_matching_versions (donor_id, seq) VALUES (OLD.donor_id, (SELECT seq FROM matching_clock WHERE id = 1))
        ON CONFLICT (donor_id) DO UPDATE SET seq = excluded.seq;
END;
