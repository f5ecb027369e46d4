-- Alert episodes (issue 13). At most one alert is open per (kind, entity): a condition that
-- gets worse escalates it instead of raising another, and a condition that cleared and comes
-- back opens a new episode (a new row). Every change of an alert (raised, escalated, repeated,
-- acknowledged, resolved) is appended to alert_events and numbered in commit order, which is
-- what the live stream follows. SQLite serialises writers (one write transaction at a time), so
-- numbering at insert is numbering in commit order.
--
-- SQLite cannot drop a UNIQUE constraint: alerts and webhook_outbox are rebuilt. The new tables
-- are referenced under their temporary names and renamed at the end (the rename rewrites the
-- references), so that no row ever points at a dropped table.

-- The condition key (`dedup_key`) was unique for ever; a resolved condition could never fire
-- again. It stays as the key of the episode's latest occurrence. `closed_at` is set when the
-- episode ends (it takes no further occurrences); NULL while it is open.
CREATE TABLE alerts_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'urgent')),
    status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    dedup_key TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    acknowledged_by TEXT,
    resolved_at TIMESTAMP,
    episode INTEGER NOT NULL DEFAULT 1 CHECK (episode >= 1),
    threshold_hours INTEGER CHECK (threshold_hours > 0),
    occurrences INTEGER NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    last_occurred_at TIMESTAMP NOT NULL,
    escalated_at TIMESTAMP,
    closed_at TIMESTAMP
);
-- Episodes of one (kind, entity) are numbered in the order they were raised; the expiry
-- threshold is the one named by the old per-threshold keys (`unit.expiring:<unit>:<h>h`).
-- Ended episodes: resolved alerts, and acknowledged alerts of the event kinds the scan does not
-- own (acknowledging ends those; the scan's own kinds end when their condition clears).
-- Several alerts still open for one (kind, entity) (one per expiry threshold, marker or
-- reading) become one episode: the latest stays open and takes further occurrences. The
-- earlier ones take no more, but keep their status: none leaves the open list before staff
-- acknowledge it or the scan sees its condition clear.
INSERT INTO alerts_new (id, kind, severity, status, dedup_key, entity_type, entity_id, message, details, created_at,
                        acknowledged_at, acknowledged_by, resolved_at, episode, threshold_hours, occurrences,
                        last_occurred_at, escalated_at, closed_at)
SELECT id, kind, severity, status, dedup_key, entity_type, entity_id, message, details, created_at,
       acknowledged_at, acknowledged_by, resolved_at, episode, threshold_hours, 1, created_at, NULL,
       CASE
           WHEN status = 'resolved' THEN COALESCE(resolved_at, created_at)
           WHEN NOT scanned AND status = 'acknowledged' THEN COALESCE(acknowledged_at, created_at)
           WHEN id < latest_open THEN CURRENT_TIMESTAMP
       END
FROM (
    SELECT a.*,
           ROW_NUMBER() OVER (PARTITION BY kind, entity_type, entity_id ORDER BY id) AS episode,
           MAX(CASE WHEN status = 'open' OR (status = 'acknowledged' AND scanned) THEN id END)
               OVER (PARTITION BY kind, entity_type, entity_id) AS latest_open,
           CASE
               WHEN kind = 'unit.expiring' AND dedup_key GLOB 'unit.expiring:[0-9]*:[0-9]*h'
                    AND CAST(rtrim(substr(dedup_key, length('unit.expiring:' || entity_id || ':') + 1), 'h') AS INTEGER) > 0
               THEN CAST(rtrim(substr(dedup_key, length('unit.expiring:' || entity_id || ':') + 1), 'h') AS INTEGER)
           END AS threshold_hours
    FROM (SELECT *, kind IN ('unit.expiring', 'unit.expired', 'sample.expiring', 'stimulation.window_missed',
                             'collection.donor_ineligible', 'collection.unstimulated', 'request.unallocated',
                             'transfusion.outcome_missing') AS scanned
          FROM alerts) a
);

-- Every change of an alert, as it was then, numbered by `seq` (assigned below).
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq BIGINT UNIQUE,
    alert_id BIGINT NOT NULL REFERENCES alerts_new (id),
    transition TEXT NOT NULL CHECK (transition IN ('raised', 'escalated', 'repeated', 'acknowledged', 'resolved')),
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'urgent')),
    previous_severity TEXT CHECK (previous_severity IN ('info', 'warning', 'urgent')),
    condition_key TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    actor TEXT,
    occurred_at TIMESTAMP NOT NULL
);
-- The alerts raised before this release, as their `raised` events, numbered by alert id: a
-- dashboard resuming with the alert id it last saw (the stream's old `id:`) resumes in place.
INSERT INTO alert_events (seq, alert_id, transition, severity, condition_key, message, details, occurred_at)
    SELECT id, id, 'raised', severity, dedup_key, message, details, created_at FROM alerts_new ORDER BY id;

-- Webhooks: one delivery per subscription and alert event (a raise, each escalation, each
-- repeat), no longer one per alert.
CREATE TABLE webhook_outbox_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id BIGINT NOT NULL REFERENCES webhook_subscriptions (id),
    alert_id BIGINT NOT NULL REFERENCES alerts_new (id),
    event TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    alert_event_id BIGINT NOT NULL REFERENCES alert_events (id)
);
INSERT INTO webhook_outbox_new (id, subscription_id, alert_id, event, status, attempts, next_attempt_at,
                                last_status_code, last_error, created_at, delivered_at, alert_event_id)
SELECT o.id, o.subscription_id, o.alert_id, o.event, o.status, o.attempts, o.next_attempt_at,
       o.last_status_code, o.last_error, o.created_at, o.delivered_at, e.id
FROM webhook_outbox o JOIN alert_events e ON e.alert_id = o.alert_id AND e.transition = 'raised';

DROP TABLE webhook_outbox;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
ALTER TABLE webhook_outbox_new RENAME TO webhook_outbox;
CREATE INDEX alerts_status ON alerts (status, created_at);
CREATE INDEX alerts_entity ON alerts (entity_type, entity_id);
CREATE UNIQUE INDEX alerts_open_episode ON alerts (kind, entity_type, entity_id) WHERE closed_at IS NULL;
CREATE INDEX alert_events_alert ON alert_events (alert_id);
CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at);
CREATE UNIQUE INDEX webhook_outbox_event ON webhook_outbox (subscription_id, alert_event_id);

-- The counter behind `seq`, one row; every new event takes the next number.
CREATE TABLE alert_event_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO alert_event_counter (id, value) SELECT 1, COALESCE(MAX(seq), 0) FROM alert_events;
CREATE TRIGGER alert_events_number AFTER INSERT ON alert_events
BEGIN
    UPDATE alert_event_counter SET value = value + 1 WHERE id = 1;
    UPDATE alert_events SET seq = (SELECT value FROM alert_event_counter WHERE id = 1) WHERE id = NEW.id;
END;

-- The events are a record: appended, numbered once, never changed or removed.
CREATE TRIGGER alert_events_append_only_update BEFORE UPDATE ON alert_events
WHEN NOT (OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.id IS OLD.id AND NEW.alert_id IS OLD.alert_id
          AND NEW.transition IS OLD.transition AND NEW.severity IS OLD.severity
          AND NEW.previous_severity IS OLD.previous_severity AND NEW.condition_key IS OLD.condition_key
          AND NEW.message IS OLD.message AND NEW.details IS OLD.details AND NEW.actor IS OLD.actor
          AND NEW.occurred_at IS OLD.occurred_at)
BEGIN SELECT RAISE(ABORT, 'alert_events is append-only'); END;
CREATE TRIGGER alert_events_append_only_delete BEFORE DELETE ON alert_events
BEGIN SELECT RAISE(ABORT, 'alert_events is append-only'); END;

ALTER TABLE job_leases ADD COLUMN last_escalated BIGINT;
