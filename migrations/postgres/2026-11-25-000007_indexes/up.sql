-- Indexes the load benchmark showed missing (docs/PERFORMANCE.md).

-- The inventory of one status, first-expiring first, read in index order without a sort.
CREATE INDEX units_status_expiry_id ON units (status, expires_at, id);
DROP INDEX units_status_expiry;

-- Crossmatches of a patient's samples (candidates), allocations of a unit in any status
-- (the partial unique index covers only active ones).
CREATE INDEX crossmatches_sample ON crossmatches (sample_id);
CREATE INDEX allocations_unit ON allocations (unit_id);
