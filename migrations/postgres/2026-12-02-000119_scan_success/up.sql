-- The last alert scan that succeeded, kept apart from the last run (which may have failed), so
-- that /metrics can tell operators how long the scan has been stalled.
ALTER TABLE job_leases ADD COLUMN last_succeeded_at TIMESTAMP;
ALTER TABLE job_leases ADD COLUMN last_success_duration_ms BIGINT;
UPDATE job_leases SET last_succeeded_at = last_finished_at, last_success_duration_ms = last_duration_ms
    WHERE last_finished_at IS NOT NULL AND last_error IS NULL;
