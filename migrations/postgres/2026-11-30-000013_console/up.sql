-- Console sessions: a person signed in with a browser holds an opaque cookie whose SHA-256 is
-- kept here (never the cookie itself), and the session ends at expires_at at the latest.
ALTER TABLE sessions ADD COLUMN cookie_hash TEXT;
ALTER TABLE sessions ADD COLUMN expires_at TIMESTAMP;
CREATE UNIQUE INDEX sessions_cookie_hash ON sessions (cookie_hash);
