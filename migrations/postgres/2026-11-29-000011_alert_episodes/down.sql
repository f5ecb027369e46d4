-- Back to one alert per condition key for ever. Deliveries beyond the first of an alert per
-- subscription (escalations, repeats) are removed; a condition key that recurred in a later
-- episode gets `#<alert id>` appended so that the keys are unique again.
ALTER TABLE job_leases DROP COLUMN last_escalated;

DROP INDEX webhook_outbox_event;
DELETE FROM webhook_outbox o
    WHERE EXISTS (SELECT 1 FROM webhook_outbox p
                  WHERE p.subscription_id = o.subscription_id AND p.alert_id = o.alert_id AND p.id < o.id);
ALTER TABLE webhook_outbox DROP COLUMN alert_event_id;
ALTER TABLE webhook_outbox ADD CONSTRAINT webhook_outbox_subscription_id_alert_id_key UNIQUE (subscription_id, alert_id);

DROP TRIGGER alert_events_no_truncate ON alert_events;
DROP TRIGGER alert_events_append_only ON alert_events;
DROP TRIGGER alert_events_number ON alert_events;
DROP TABLE alert_events;
DROP TABLE alert_event_counter;
DROP FUNCTION alert_events_append_only();
DROP FUNCTION alert_events_number();

DROP INDEX alerts_open_episode;
UPDATE alerts a SET dedup_key = a.dedup_key || '#' || a.id
    WHERE EXISTS (SELECT 1 FROM alerts b WHERE b.dedup_key = a.dedup_key AND b.id < a.id);
ALTER TABLE alerts ADD CONSTRAINT alerts_dedup_key_key UNIQUE (dedup_key);
ALTER TABLE alerts DROP COLUMN closed_at;
ALTER TABLE alerts DROP COLUMN escalated_at;
ALTER TABLE alerts DROP COLUMN last_occurred_at;
ALTER TABLE alerts DROP COLUMN occurrences;
ALTER TABLE alerts DROP COLUMN threshold_hours;
ALTER TABLE alerts DROP COLUMN episode;
