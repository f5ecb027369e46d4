-- Indexes the load benchmark showed missing (docs/PERFORMANCE.md). The units listing needs no
-- new index here: SQLite index entries end with the rowid (the id), so (status, expires_at)
-- already yields first-expiring, then id, order.

-- Crossmatches of a patient's samples (candidates), allocations of a unit in any status
-- (the partial unique index covers only active ones).
CREATE INDEX crossmatches_sample ON crossmatches (sample_id);
CREATE INDEX allocations_unit ON allocations (unit_id);
