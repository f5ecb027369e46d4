-- Clinical judgement where it belongs (issue 13): finding tiers with recorded acknowledgements
-- and authorisations, a medical director's sign-off, tracked tasks, emergency releases bound
-- to their request, derived childbearing potential, pooled units.

-- What staff accepted when allocating or issuing: the findings (with their tiers), the codes
-- acknowledged, and who authorised by phone. Facts: never changed.
CREATE TABLE allocation_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    allocation_id BIGINT NOT NULL REFERENCES allocations (id),
    stage TEXT NOT NULL CHECK (stage IN ('allocation', 'issue')),
    findings TEXT NOT NULL,
    acknowledged TEXT NOT NULL,
    authorised_by TEXT,
    authoriser_role TEXT,
    authorised_at TIMESTAMP,
    authorisation_reason TEXT,
    recorded_by TEXT NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    CHECK ((authorised_by IS NULL) = (authorisation_reason IS NULL))
);
CREATE INDEX allocation_decisions_allocation ON allocation_decisions (allocation_id);

-- A medical director's sign-off covers every authorisation of the allocation up to
-- `through_decision_id`.
CREATE TABLE allocation_sign_offs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    allocation_id BIGINT NOT NULL REFERENCES allocations (id),
    through_decision_id BIGINT NOT NULL REFERENCES allocation_decisions (id),
    comment TEXT NOT NULL,
    signed_off_by TEXT NOT NULL,
    signed_off_at TIMESTAMP NOT NULL
);
CREATE INDEX allocation_sign_offs_allocation ON allocation_sign_offs (allocation_id);

-- The findings accepted at allocation become the allocation's first decision (the decisions
-- are the one record of them from now on). Overrides of earlier releases were made by a
-- medical director in person: they become authorisations, signed off by that director at the
-- time.
INSERT INTO allocation_decisions (allocation_id, stage, findings, acknowledged, authorised_by, authoriser_role,
                                  authorised_at, authorisation_reason, recorded_by, recorded_at)
    SELECT id, 'allocation', warnings, '[]',
           CASE WHEN override_reason IS NULL THEN NULL ELSE COALESCE(overridden_by, allocated_by) END,
           CASE WHEN override_reason IS NULL THEN NULL ELSE 'medical_director' END,
           CASE WHEN override_reason IS NULL THEN NULL ELSE allocated_at END,
           override_reason, COALESCE(overridden_by, allocated_by), allocated_at
    FROM allocations WHERE override_reason IS NOT NULL OR warnings <> '[]';
INSERT INTO allocation_sign_offs (allocation_id, through_decision_id, comment, signed_off_by, signed_off_at)
    SELECT allocation_id, id, 'override by a medical director (before sign-off was recorded separately)',
           authorised_by, authorised_at
    FROM allocation_decisions WHERE authorised_by IS NOT NULL;
ALTER TABLE allocations DROP COLUMN override_reason;
ALTER TABLE allocations DROP COLUMN overridden_by;
ALTER TABLE allocations DROP COLUMN warnings;

-- Follow-up work with a due time and an owner: anti-D prophylaxis, look-forward,
-- emergency-release follow-up.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('anti_d_prophylaxis', 'look_forward', 'emergency_release_follow_up')),
    status TEXT NOT NULL CHECK (status IN ('open', 'done')),
    subject_type TEXT NOT NULL,
    subject_id BIGINT NOT NULL,
    title TEXT NOT NULL,
    details TEXT NOT NULL,
    owner_role TEXT NOT NULL CHECK (owner_role IN ('admin', 'medical_director', 'technologist')),
    due_at TIMESTAMP NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    completed_by TEXT,
    completed_at TIMESTAMP,
    note TEXT
);
CREATE INDEX tasks_status ON tasks (status, due_at);

-- An emergency release binds the unit to one request and records what was still pending.
CREATE TABLE emergency_releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    request_id BIGINT NOT NULL REFERENCES requests (id),
    physician TEXT NOT NULL,
    acknowledged_at TIMESTAMP NOT NULL,
    pending_markers TEXT NOT NULL,
    results_expected_at TIMESTAMP NOT NULL,
    released_by TEXT NOT NULL,
    released_at TIMESTAMP NOT NULL
);
CREATE INDEX emergency_releases_unit ON emergency_releases (unit_id);

-- Childbearing potential is derived from sex and age unless the record states it. A `true` of
-- earlier releases was stated (the default was false); a `false` may not have been.
ALTER TABLE patients ADD COLUMN childbearing_potential_stated BOOLEAN;
UPDATE patients SET childbearing_potential_stated = TRUE WHERE childbearing_potential;
ALTER TABLE patients DROP COLUMN childbearing_potential;

-- Supplier units: a pooled RhD group, and the expiry printed on the supplier's label.
CREATE TABLE unit_supply (
    unit_id BIGINT PRIMARY KEY NOT NULL REFERENCES units (id),
    rhd_pooled BOOLEAN NOT NULL,
    labelled_expires_at TIMESTAMP
);

-- Pool members: their groups and collection times when the supplier gives them, and found by
-- DIN (a supplier's recall names a member, not the pool).
ALTER TABLE unit_pool_members ADD COLUMN abo TEXT CHECK (abo IN ('O', 'A', 'B', 'AB'));
ALTER TABLE unit_pool_members ADD COLUMN rhd TEXT CHECK (rhd IN ('positive', 'negative'));
ALTER TABLE unit_pool_members ADD COLUMN collected_at TIMESTAMP;
CREATE INDEX unit_pool_members_din ON unit_pool_members (din);

CREATE TRIGGER allocation_decisions_append_only_update BEFORE UPDATE ON allocation_decisions
BEGIN SELECT RAISE(ABORT, 'allocation_decisions is append-only'); END;
CREATE TRIGGER allocation_decisions_append_only_delete BEFORE DELETE ON allocation_decisions
BEGIN SELECT RAISE(ABORT, 'allocation_decisions is append-only'); END;
CREATE TRIGGER allocation_sign_offs_append_only_update BEFORE UPDATE ON allocation_sign_offs
BEGIN SELECT RAISE(ABORT, 'allocation_sign_offs is append-only'); END;
CREATE TRIGGER allocation_sign_offs_append_only_delete BEFORE DELETE ON allocation_sign_offs
BEGIN SELECT RAISE(ABORT, 'allocation_sign_offs is append-only'); END;
CREATE TRIGGER emergency_releases_append_only_update BEFORE UPDATE ON emergency_releases
BEGIN SELECT RAISE(ABORT, 'emergency_releases is append-only'); END;
CREATE TRIGGER emergency_releases_append_only_delete BEFORE DELETE ON emergency_releases
BEGIN SELECT RAISE(ABORT, 'emergency_releases is append-only'); END;
