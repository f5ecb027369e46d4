DROP TABLE job_leases;
DROP INDEX alerts_entity;
ALTER TABLE alerts DROP COLUMN resolved_at;
