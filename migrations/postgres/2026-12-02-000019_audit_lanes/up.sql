-- The audit trail is several hash chains ("lanes"), so that concurrent transactions no longer
-- queue behind one lock until their commits: each appends to the tail of a lane it holds. Rows
-- written before this migration are lane 0. The index finds a lane's tail.
ALTER TABLE audit_log ADD COLUMN lane INTEGER NOT NULL DEFAULT 0 CHECK (lane >= 0);
CREATE INDEX audit_log_lane_id ON audit_log (lane, id);
