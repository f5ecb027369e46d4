-- Alerts can be resolved (their condition cleared); job leases keep scans from overlapping and
-- record how each job last ran.

CREATE TABLE alerts_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'urgent')),
    status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    dedup_key TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    acknowledged_by TEXT,
    resolved_at TIMESTAMP
);
INSERT INTO alerts_new (id, kind, severity, status, dedup_key, entity_type, entity_id, message, details,
                        created_at, acknowledged_at, acknowledged_by)
SELECT id, kind, severity, status, dedup_key, entity_type, entity_id, message, details,
       created_at, acknowledged_at, acknowledged_by FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
CREATE INDEX alerts_status ON alerts (status, created_at);
CREATE INDEX alerts_entity ON alerts (entity_type, entity_id);

CREATE TABLE job_leases (
    name TEXT PRIMARY KEY NOT NULL,
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
