DROP INDEX idempotency_keys_created_at;
DELETE FROM idempotency_keys WHERE path <> '/api/v1/requests' OR status_code = 0;
ALTER TABLE idempotency_keys DROP COLUMN response_headers;
ALTER TABLE idempotency_keys DROP COLUMN path;
ALTER TABLE idempotency_keys DROP COLUMN method;
