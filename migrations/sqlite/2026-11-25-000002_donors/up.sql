-- The policy table, donors with their deferrals and outside donation history, apheresis
-- devices, collections and stimulations.

-- One row: the rule table as a JSON document (domain.md §7), versioned for optimistic updates.
CREATE TABLE policy (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    updated_by TEXT NOT NULL
);

CREATE TABLE donors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    donor_number TEXT NOT NULL UNIQUE,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    date_of_birth DATE NOT NULL,
    sex TEXT NOT NULL CHECK (sex IN ('female', 'male', 'unknown')),
    weight_kg DOUBLE NOT NULL,
    abo TEXT NOT NULL CHECK (abo IN ('O', 'A', 'B', 'AB')),
    rhd TEXT NOT NULL CHECK (rhd IN ('positive', 'negative')),
    cmv TEXT NOT NULL CHECK (cmv IN ('negative', 'positive', 'unknown')),
    hla TEXT NOT NULL,
    donor_type TEXT NOT NULL CHECK (donor_type IN ('community', 'directed', 'family')),
    phone TEXT,
    email TEXT,
    contraindications TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT 1,
    search_text TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX donors_blood_group ON donors (abo, rhd);

CREATE TABLE deferrals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    donor_id BIGINT NOT NULL REFERENCES donors (id),
    reason TEXT NOT NULL,
    permanent BOOLEAN NOT NULL,
    starts_at TIMESTAMP NOT NULL,
    until TIMESTAMP,
    set_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    CHECK (NOT (permanent AND until IS NOT NULL))
);
CREATE INDEX deferrals_donor ON deferrals (donor_id);

CREATE TABLE donations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    donor_id BIGINT NOT NULL REFERENCES donors (id),
    kind TEXT NOT NULL CHECK (kind IN ('whole_blood', 'platelets', 'plasma', 'red_cells', 'leukapheresis')),
    donated_at TIMESTAMP NOT NULL,
    red_cell_loss_ml INTEGER,
    red_cells_returned BOOLEAN NOT NULL,
    site TEXT,
    recorded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX donations_donor ON donations (donor_id, donated_at);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    active BOOLEAN NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- request_id gets its foreign key when requests exist.
CREATE TABLE collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    donor_id BIGINT NOT NULL REFERENCES donors (id),
    device_id BIGINT NOT NULL REFERENCES devices (id),
    request_id BIGINT,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'in_progress', 'completed', 'aborted')),
    scheduled_start TIMESTAMP NOT NULL,
    scheduled_end TIMESTAMP NOT NULL,
    planned_agents TEXT NOT NULL,
    started_at TIMESTAMP,
    ended_at TIMESTAMP,
    volume_processed_ml INTEGER,
    hes_used BOOLEAN,
    pre_count_wbc DOUBLE,
    pre_count_anc DOUBLE,
    abort_reason TEXT,
    adverse_events TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (scheduled_end > scheduled_start),
    CHECK (ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX collections_donor ON collections (donor_id, scheduled_start);
CREATE INDEX collections_device ON collections (device_id, scheduled_start);

CREATE TABLE stimulations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    donor_id BIGINT NOT NULL REFERENCES donors (id),
    collection_id BIGINT REFERENCES collections (id),
    agent TEXT NOT NULL,
    dose DOUBLE NOT NULL,
    dose_unit TEXT NOT NULL CHECK (dose_unit IN ('ug', 'ug_per_kg', 'mg')),
    administered_at TIMESTAMP NOT NULL,
    adverse_effects TEXT,
    recorded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX stimulations_donor ON stimulations (donor_id, agent);
CREATE INDEX stimulations_collection ON stimulations (collection_id);
