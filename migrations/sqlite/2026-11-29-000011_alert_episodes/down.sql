-- Back to one alert per condition key for ever. Deliveries beyond the first of an alert per
-- subscription (escalations, repeats) are removed; a condition key that recurred in a later
-- episode gets `#<alert id>` appended so that the keys are unique again.
ALTER TABLE job_leases DROP COLUMN last_escalated;
DROP TABLE alert_event_counter;

CREATE TABLE alerts_old (
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
INSERT INTO alerts_old (id, kind, severity, status, dedup_key, entity_type, entity_id, message, details, created_at,
                        acknowledged_at, acknowledged_by, resolved_at)
SELECT id, kind, severity, status,
       CASE WHEN EXISTS (SELECT 1 FROM alerts b WHERE b.dedup_key = a.dedup_key AND b.id < a.id)
            THEN a.dedup_key || '#' || a.id ELSE a.dedup_key END,
       entity_type, entity_id, message, details, created_at, acknowledged_at, acknowledged_by, resolved_at
FROM alerts a;

CREATE TABLE webhook_outbox_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id BIGINT NOT NULL REFERENCES webhook_subscriptions (id),
    alert_id BIGINT NOT NULL REFERENCES alerts_old (id),
    event TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    UNIQUE (subscription_id, alert_id)
);
INSERT INTO webhook_outbox_old (id, subscription_id, alert_id, event, status, attempts, next_attempt_at,
                                last_status_code, last_error, created_at, delivered_at)
SELECT id, subscription_id, alert_id, event, status, attempts, next_attempt_at, last_status_code, last_error,
       created_at, delivered_at
FROM webhook_outbox o
WHERE NOT EXISTS (SELECT 1 FROM webhook_outbox p
                  WHERE p.subscription_id = o.subscription_id AND p.alert_id = o.alert_id AND p.id < o.id);

DROP TABLE webhook_outbox;
DROP TABLE alert_events;
DROP TABLE alerts;
ALTER TABLE alerts_old RENAME TO alerts;
ALTER TABLE webhook_outbox_old RENAME TO webhook_outbox;
CREATE INDEX alerts_status ON alerts (status, created_at);
CREATE INDEX alerts_entity ON alerts (entity_type, entity_id);
CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at);
