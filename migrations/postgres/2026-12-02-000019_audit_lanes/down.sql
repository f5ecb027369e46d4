DROP INDEX audit_log_lane_id;
ALTER TABLE audit_log DROP COLUMN lane;
