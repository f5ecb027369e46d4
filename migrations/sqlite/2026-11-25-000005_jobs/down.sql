DROP TABLE job_leases;
DROP INDEX alerts_entity;
