ALTER TABLE job_leases DROP COLUMN last_success_duration_ms;
ALTER TABLE job_leases DROP COLUMN last_succeeded_at;
