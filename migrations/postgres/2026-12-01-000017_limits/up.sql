-- Instances that serve this database, each seen at its last heartbeat: the rate limits are
-- shared among the live ones (each enforces 1/n of the configured rate).
CREATE TABLE instances (
    id TEXT PRIMARY KEY NOT NULL,
    started_at TIMESTAMP NOT NULL,
    seen_at TIMESTAMP NOT NULL
);

-- Open event streams: an account has max_streams_per_account slots; a stream holds one until
-- it closes (holder cleared) or stops renewing it (a crashed instance: leased_until passes).
CREATE TABLE stream_leases (
    account TEXT NOT NULL,
    slot INTEGER NOT NULL,
    holder TEXT,
    leased_until TIMESTAMP,
    PRIMARY KEY (account, slot)
);

-- Requests placed by hospital accounts per hospital and facility calendar day (YYYY-MM-DD),
-- incremented in the transaction that creates the request: the row lock makes the daily cap
-- exact across instances, and a rolled-back creation gives its place back.
CREATE TABLE hospital_request_counts (
    hospital_id BIGINT NOT NULL REFERENCES hospitals (id),
    day TEXT NOT NULL,
    placed INTEGER NOT NULL,
    PRIMARY KEY (hospital_id, day)
);
