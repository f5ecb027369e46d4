-- No wrong unit reaches a patient (issue 12): results are facts kept for ever, returned units
-- are inspected, excursions stay on the unit, the blood bank types the patient's group.

-- Every storage reading out of range, against every unit in the bank it applied to.
CREATE TABLE unit_excursions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    storage_reading_id BIGINT NOT NULL REFERENCES storage_readings (id),
    temperature_c DOUBLE NOT NULL,
    measured_at TIMESTAMP NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    UNIQUE (unit_id, storage_reading_id)
);
-- Readings recorded before this release: every out-of-range reading of a unit still in the bank.
INSERT INTO unit_excursions (unit_id, storage_reading_id, temperature_c, measured_at, recorded_at)
    SELECT r.unit_id, r.id, r.temperature_c, r.measured_at, r.created_at
    FROM storage_readings r JOIN units u ON u.id = r.unit_id
    WHERE NOT r.in_range AND u.status IN ('quarantined', 'available', 'allocated');

-- A medical director's disposition covers every excursion up to `through_excursion_id`.
CREATE TABLE excursion_dispositions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    through_excursion_id BIGINT NOT NULL REFERENCES unit_excursions (id),
    reason TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    decided_at TIMESTAMP NOT NULL
);
CREATE INDEX excursion_dispositions_unit ON excursion_dispositions (unit_id);
CREATE INDEX unit_excursions_unit ON unit_excursions (unit_id);

-- The inspection of a unit returned from an allocation.
CREATE TABLE unit_inspections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    allocation_id BIGINT NOT NULL UNIQUE REFERENCES allocations (id),
    acceptable BOOLEAN NOT NULL,
    notes TEXT,
    minutes_out_of_storage INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('available', 'held', 'discarded')),
    inspected_by TEXT NOT NULL,
    inspected_at TIMESTAMP NOT NULL
);
CREATE INDEX unit_inspections_unit ON unit_inspections (unit_id);

-- Crossmatches: red-cell or leukocyte; the method is an enumeration from now on (older free
-- text that names one of them is normalised, anything else is kept as it was recorded).
ALTER TABLE crossmatches ADD COLUMN kind TEXT NOT NULL DEFAULT 'red_cell' CHECK (kind IN ('red_cell', 'leukocyte'));
UPDATE crossmatches SET method = lower(trim(method))
    WHERE lower(trim(method)) IN ('iat', 'immediate_spin', 'electronic');
UPDATE crossmatches SET method = 'immediate_spin'
    WHERE lower(trim(method)) IN ('is', 'immediate spin', 'immediate-spin');

-- A medical director's resolution of an incompatible crossmatch (once).
CREATE TABLE crossmatch_resolutions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    crossmatch_id BIGINT NOT NULL UNIQUE REFERENCES crossmatches (id),
    reason TEXT NOT NULL,
    resolved_by TEXT NOT NULL,
    resolved_at TIMESTAMP NOT NULL
);

-- The blood bank's own ABO/RhD typings of patient samples.
CREATE TABLE sample_typings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id BIGINT NOT NULL REFERENCES samples (id),
    patient_id BIGINT NOT NULL REFERENCES patients (id),
    abo TEXT NOT NULL CHECK (abo IN ('O', 'A', 'B', 'AB')),
    rhd TEXT NOT NULL CHECK (rhd IN ('positive', 'negative')),
    typed_by TEXT NOT NULL,
    typed_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX sample_typings_patient ON sample_typings (patient_id);

-- Requests: every granulocyte unit is irradiated (the requirement is recorded, and only true).
ALTER TABLE requests ADD COLUMN irradiated BOOLEAN NOT NULL DEFAULT TRUE CHECK (irradiated);

-- A deferral raised by a reactive result names the unit.
ALTER TABLE deferrals ADD COLUMN source_unit_id BIGINT REFERENCES units (id);

-- Results are facts: never updated, never deleted.
CREATE TRIGGER unit_tests_append_only_update BEFORE UPDATE ON unit_tests
BEGIN SELECT RAISE(ABORT, 'unit_tests is append-only'); END;
CREATE TRIGGER unit_tests_append_only_delete BEFORE DELETE ON unit_tests
BEGIN SELECT RAISE(ABORT, 'unit_tests is append-only'); END;
CREATE TRIGGER crossmatches_append_only_update BEFORE UPDATE ON crossmatches
BEGIN SELECT RAISE(ABORT, 'crossmatches is append-only'); END;
CREATE TRIGGER crossmatches_append_only_delete BEFORE DELETE ON crossmatches
BEGIN SELECT RAISE(ABORT, 'crossmatches is append-only'); END;
CREATE TRIGGER crossmatch_resolutions_append_only_update BEFORE UPDATE ON crossmatch_resolutions
BEGIN SELECT RAISE(ABORT, 'crossmatch_resolutions is append-only'); END;
CREATE TRIGGER crossmatch_resolutions_append_only_delete BEFORE DELETE ON crossmatch_resolutions
BEGIN SELECT RAISE(ABORT, 'crossmatch_resolutions is append-only'); END;
CREATE TRIGGER sample_typings_append_only_update BEFORE UPDATE ON sample_typings
BEGIN SELECT RAISE(ABORT, 'sample_typings is append-only'); END;
CREATE TRIGGER sample_typings_append_only_delete BEFORE DELETE ON sample_typings
BEGIN SELECT RAISE(ABORT, 'sample_typings is append-only'); END;
CREATE TRIGGER unit_excursions_append_only_update BEFORE UPDATE ON unit_excursions
BEGIN SELECT RAISE(ABORT, 'unit_excursions is append-only'); END;
CREATE TRIGGER unit_excursions_append_only_delete BEFORE DELETE ON unit_excursions
BEGIN SELECT RAISE(ABORT, 'unit_excursions is append-only'); END;
CREATE TRIGGER excursion_dispositions_append_only_update BEFORE UPDATE ON excursion_dispositions
BEGIN SELECT RAISE(ABORT, 'excursion_dispositions is append-only'); END;
CREATE TRIGGER excursion_dispositions_append_only_delete BEFORE DELETE ON excursion_dispositions
BEGIN SELECT RAISE(ABORT, 'excursion_dispositions is append-only'); END;
CREATE TRIGGER unit_inspections_append_only_update BEFORE UPDATE ON unit_inspections
BEGIN SELECT RAISE(ABORT, 'unit_inspections is append-only'); END;
CREATE TRIGGER unit_inspections_append_only_delete BEFORE DELETE ON unit_inspections
BEGIN SELECT RAISE(ABORT, 'unit_inspections is append-only'); END;
