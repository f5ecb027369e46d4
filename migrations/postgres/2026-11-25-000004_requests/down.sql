DROP TABLE allocations;
DROP TABLE crossmatches;
DROP TABLE idempotency_keys;
DROP TABLE requests;
DROP TABLE samples;
DROP TABLE patients;
