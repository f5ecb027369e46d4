DROP TABLE hospital_request_counts;
DROP TABLE stream_leases;
DROP TABLE instances;
