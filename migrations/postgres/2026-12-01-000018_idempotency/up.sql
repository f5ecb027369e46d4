-- Idempotency-Key on every creating POST: a key is reserved (status_code 0, the answer not yet
-- known) before the handler runs and holds the first answer afterwards. Method and path say
-- which route the key was used on; the headers a replay needs (Content-Type, Location, ETag)
-- are kept with the body. Expired keys are purged by created_at.
ALTER TABLE idempotency_keys ADD COLUMN method TEXT NOT NULL DEFAULT 'POST';
ALTER TABLE idempotency_keys ADD COLUMN path TEXT NOT NULL DEFAULT '/api/v1/requests';
ALTER TABLE idempotency_keys ADD COLUMN response_headers TEXT NOT NULL DEFAULT '{}';
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
