DROP TRIGGER emergency_releases_no_truncate ON emergency_releases;
DROP TRIGGER emergency_releases_append_only ON emergency_releases;
DROP TRIGGER allocation_sign_offs_no_truncate ON allocation_sign_offs;
DROP TRIGGER allocation_sign_offs_append_only ON allocation_sign_offs;
DROP TRIGGER allocation_decisions_no_truncate ON allocation_decisions;
DROP TRIGGER allocation_decisions_append_only ON allocation_decisions;
DROP INDEX unit_pool_members_din;
ALTER TABLE unit_pool_members DROP COLUMN collected_at;
ALTER TABLE unit_pool_members DROP COLUMN rhd;
ALTER TABLE unit_pool_members DROP COLUMN abo;
DROP TABLE unit_supply;
ALTER TABLE patients ADD COLUMN childbearing_potential BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE patients SET childbearing_potential = COALESCE(childbearing_potential_stated, FALSE);
ALTER TABLE patients DROP COLUMN childbearing_potential_stated;
DROP TABLE emergency_releases;
DROP TABLE tasks;
ALTER TABLE allocations ADD COLUMN override_reason TEXT;
ALTER TABLE allocations ADD COLUMN overridden_by TEXT;
ALTER TABLE allocations ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
-- Back to the earlier shape: the allocation-stage findings (every tier one that release reads
-- as a warning) and its authorisation as the override.
UPDATE allocations SET
    warnings = COALESCE((SELECT REPLACE(REPLACE(REPLACE(d.findings, '"severity":"authorise"', '"severity":"warn"'),
                                                '"severity":"acknowledge"', '"severity":"warn"'),
                                        '"severity":"info"', '"severity":"warn"')
                         FROM allocation_decisions d
                         WHERE d.allocation_id = allocations.id AND d.stage = 'allocation'), '[]'),
    override_reason = (SELECT d.authorisation_reason FROM allocation_decisions d
                       WHERE d.allocation_id = allocations.id AND d.stage = 'allocation'),
    overridden_by = (SELECT d.authorised_by FROM allocation_decisions d
                     WHERE d.allocation_id = allocations.id AND d.stage = 'allocation');
DROP TABLE allocation_sign_offs;
DROP TABLE allocation_decisions;
