DROP TABLE alerts;
DROP TABLE storage_readings;
DROP TABLE unit_tests;
DROP TABLE unit_pool_members;
DROP TABLE units;
DROP TABLE din_sequences;
