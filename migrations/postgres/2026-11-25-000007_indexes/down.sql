DROP INDEX allocations_unit;
DROP INDEX crossmatches_sample;
CREATE INDEX units_status_expiry ON units (status, expires_at);
DROP INDEX units_status_expiry_id;
