-- Second factor for people (TOTP, RFC 6238). The seed is sealed under GRANULO_SECRETS_KEY
-- (context "totp-seed"), never stored in clear. confirmed_at is NULL while an enrolment waits
-- for its first code; last_step is the last accepted 30-second step (a code works once).
CREATE TABLE user_mfa (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    seed_sealed TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    confirmed_at TIMESTAMP,
    last_step BIGINT
);

-- Recovery codes: SHA-256 of each (they carry 80 random bits), spent once.
CREATE TABLE mfa_recovery_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id),
    code_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);
CREATE INDEX mfa_recovery_codes_user ON mfa_recovery_codes (user_id);

-- The second step of a sign-in: a random challenge (its SHA-256 here) bound to the user whose
-- password was right, short-lived and spent once.
CREATE TABLE mfa_challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);
