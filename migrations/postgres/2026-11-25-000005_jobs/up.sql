-- Alerts can be resolved (their condition cleared); job leases keep scans from overlapping and
-- record how each job last ran.

ALTER TABLE alerts DROP CONSTRAINT alerts_status_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_status_check CHECK (status IN ('open', 'acknowledged', 'resolved'));
ALTER TABLE alerts ADD COLUMN resolved_at TIMESTAMP;
CREATE INDEX alerts_entity ON alerts (entity_type, entity_id);

CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT,
    leased_until TIMESTAMP,
    runs BIGINT NOT NULL DEFAULT 0,
    last_started_at TIMESTAMP,
    last_finished_at TIMESTAMP,
    last_duration_ms BIGINT,
    last_raised BIGINT,
    last_resolved BIGINT,
    last_expired BIGINT,
    last_error TEXT
);
