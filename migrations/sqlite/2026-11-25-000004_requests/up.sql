-- Patients and samples, hospital requests, idempotency keys, crossmatches and allocations.

CREATE TABLE patients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hospital_id BIGINT NOT NULL REFERENCES hospitals (id),
    mrn TEXT NOT NULL,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    date_of_birth DATE NOT NULL,
    sex TEXT NOT NULL CHECK (sex IN ('female', 'male', 'unknown')),
    weight_kg DOUBLE NOT NULL,
    abo TEXT NOT NULL CHECK (abo IN ('O', 'A', 'B', 'AB')),
    rhd TEXT NOT NULL CHECK (rhd IN ('positive', 'negative')),
    cmv TEXT NOT NULL CHECK (cmv IN ('negative', 'positive', 'unknown')),
    childbearing_potential BOOLEAN NOT NULL,
    hla_antibodies TEXT NOT NULL,
    granulocyte_antibodies BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (hospital_id, mrn)
);

CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id BIGINT NOT NULL REFERENCES patients (id),
    drawn_at TIMESTAMP NOT NULL,
    transfused_or_pregnant_within_3_months BOOLEAN NOT NULL,
    valid_until TIMESTAMP NOT NULL,
    recorded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX samples_patient ON samples (patient_id);

CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hospital_id BIGINT NOT NULL REFERENCES hospitals (id),
    patient_id BIGINT NOT NULL REFERENCES patients (id),
    units_requested INTEGER NOT NULL,
    needed_by TIMESTAMP NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('stat', 'asap', 'routine', 'scheduled')),
    anc_per_ul INTEGER NOT NULL,
    infection TEXT NOT NULL,
    refractory_hours INTEGER NOT NULL,
    cmv_negative BOOLEAN NOT NULL,
    hla_compatible BOOLEAN NOT NULL,
    within_indication BOOLEAN NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending_approval', 'open', 'fulfilled', 'cancelled', 'declined')),
    decided_by TEXT,
    decided_at TIMESTAMP,
    decision_reason TEXT,
    cancelled_by TEXT,
    cancel_reason TEXT,
    requested_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX requests_status ON requests (status, needed_by);
CREATE INDEX requests_hospital ON requests (hospital_id);

-- A POST's first answer, replayed for a retry with the same key from the same account.
CREATE TABLE idempotency_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (account, idempotency_key)
);

CREATE TABLE crossmatches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    sample_id BIGINT NOT NULL REFERENCES samples (id),
    result TEXT NOT NULL CHECK (result IN ('compatible', 'incompatible')),
    method TEXT NOT NULL,
    performed_by TEXT NOT NULL,
    performed_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX crossmatches_unit ON crossmatches (unit_id);

CREATE TABLE allocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id BIGINT NOT NULL REFERENCES requests (id),
    unit_id BIGINT NOT NULL REFERENCES units (id),
    status TEXT NOT NULL CHECK (status IN ('allocated', 'issued', 'transfused', 'returned', 'cancelled')),
    warnings TEXT NOT NULL,
    override_reason TEXT,
    overridden_by TEXT,
    anti_d_task BOOLEAN NOT NULL,
    allocated_by TEXT NOT NULL,
    allocated_at TIMESTAMP NOT NULL,
    issued_at TIMESTAMP,
    issued_by TEXT,
    scanned_din TEXT,
    ended_at TIMESTAMP,
    end_reason TEXT,
    transfusion_started_at TIMESTAMP,
    transfusion_ended_at TIMESTAMP,
    reaction TEXT,
    pre_anc_per_ul INTEGER,
    post_anc_per_ul INTEGER,
    anc_increment_per_ul INTEGER,
    outcome_recorded_by TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- Invariant 1: a unit is in at most one active allocation.
CREATE UNIQUE INDEX allocations_one_active_per_unit ON allocations (unit_id) WHERE status IN ('allocated', 'issued');
CREATE INDEX allocations_request ON allocations (request_id);
