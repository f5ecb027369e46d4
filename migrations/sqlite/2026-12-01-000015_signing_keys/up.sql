-- Access-token signing keys, shared by every instance. The key is sealed under
-- GRANULO_SECRETS_KEY (context `signing-key`), never stored in clear; kid is an HMAC fingerprint
-- of it. The signer is the one key without retire_after; the others verify until then.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    sealed_key TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT NOT NULL,
    retire_after TIMESTAMP
);
-- At most one signer, even when two rotations race.
CREATE UNIQUE INDEX signing_keys_one_signer ON signing_keys ((retire_after IS NULL)) WHERE retire_after IS NULL;
