-- Granulocyte units, their tests, storage readings, DIN sequences and alert instances.

-- The last sequence number assigned per facility and year (DINs without gaps or duplicates).
CREATE TABLE din_sequences (
    fin TEXT NOT NULL,
    year INTEGER NOT NULL,
    last_value INTEGER NOT NULL,
    PRIMARY KEY (fin, year)
);

CREATE TABLE units (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    din TEXT NOT NULL UNIQUE,
    product_code TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('collection', 'external')),
    collection_id BIGINT UNIQUE REFERENCES collections (id),
    donor_id BIGINT REFERENCES donors (id),
    supplier TEXT,
    pooled BOOLEAN NOT NULL,
    abo TEXT NOT NULL CHECK (abo IN ('O', 'A', 'B', 'AB')),
    rhd TEXT NOT NULL CHECK (rhd IN ('positive', 'negative')),
    cmv TEXT NOT NULL CHECK (cmv IN ('negative', 'positive', 'unknown')),
    volume_ml INTEGER NOT NULL,
    granulocyte_count DOUBLE NOT NULL,
    red_cell_volume_ml DOUBLE,
    collected_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('quarantined', 'available', 'allocated', 'issued', 'transfused', 'expired', 'discarded')),
    status_reason TEXT,
    storage_location TEXT,
    irradiated_at TIMESTAMP,
    irradiation_dose_gy DOUBLE,
    irradiation_device TEXT,
    irradiated_by TEXT,
    release_kind TEXT CHECK (release_kind IN ('tested', 'emergency')),
    released_at TIMESTAMP,
    released_by TEXT,
    emergency_physician TEXT,
    emergency_acknowledged_at TIMESTAMP,
    discarded_at TIMESTAMP,
    discarded_by TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK ((source = 'collection') = (collection_id IS NOT NULL)),
    CHECK ((release_kind = 'emergency') = (emergency_physician IS NOT NULL))
);
CREATE INDEX units_status_expiry ON units (status, expires_at);
CREATE INDEX units_location ON units (storage_location);

CREATE TABLE unit_pool_members (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    din TEXT NOT NULL,
    UNIQUE (unit_id, din)
);

CREATE TABLE unit_tests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    marker TEXT NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('negative', 'positive', 'pending')),
    recorded_at TIMESTAMP NOT NULL,
    recorded_by TEXT NOT NULL
);
CREATE INDEX unit_tests_unit ON unit_tests (unit_id, marker);

-- A reading of one unit, or of a storage location (then it applies to the units kept there).
CREATE TABLE storage_readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT REFERENCES units (id),
    temperature_c DOUBLE NOT NULL,
    measured_at TIMESTAMP NOT NULL,
    location TEXT,
    in_range BOOLEAN NOT NULL,
    recorded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    CHECK (unit_id IS NOT NULL OR location IS NOT NULL)
);
CREATE INDEX storage_readings_unit ON storage_readings (unit_id, measured_at);

-- Alert instances; the same condition raises one alert (dedup_key).
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'urgent')),
    status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged')),
    dedup_key TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    acknowledged_by TEXT
);
CREATE INDEX alerts_status ON alerts (status, created_at);
