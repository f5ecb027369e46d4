-- The audit trail is several hash chains ("lanes"; see the PostgreSQL migration). SQLite has
-- one writer at a time and appends to lane 0 only; the column keeps both schemas alike.
ALTER TABLE audit_log ADD COLUMN lane INTEGER NOT NULL DEFAULT 0 CHECK (lane >= 0);
CREATE INDEX audit_log_lane_id ON audit_log (lane, id);
