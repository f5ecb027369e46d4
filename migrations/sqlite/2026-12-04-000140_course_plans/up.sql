-- The course planner (issue 20). A proposal is kept as proposed (its days as JSON, the facts it
-- stood on); accepting it records who and when once, and writes one row per course day it
-- books, so the alert scan and the request's view read the accepted roster without the JSON.
CREATE TABLE course_plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id BIGINT NOT NULL REFERENCES requests (id),
    -- The accepted plan this one repairs (its kept days are that plan's bookings).
    repairs_plan_id BIGINT REFERENCES course_plans (id),
    body TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    proposed_at TIMESTAMP NOT NULL,
    accepted_by TEXT,
    accepted_at TIMESTAMP,
    CHECK ((accepted_by IS NULL) = (accepted_at IS NULL))
);
CREATE INDEX course_plans_request ON course_plans (request_id, id);

-- One row per course day of an accepted plan: the collection booked for it, the unit meant
-- for it, or neither (uncovered).
CREATE TABLE course_plan_days (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id BIGINT NOT NULL REFERENCES course_plans (id),
    day INTEGER NOT NULL CHECK (day >= 1),
    due_at TIMESTAMP NOT NULL,
    collection_id BIGINT REFERENCES collections (id),
    unit_id BIGINT REFERENCES units (id),
    uncovered_code TEXT,
    UNIQUE (plan_id, day)
);
CREATE INDEX course_plan_days_collection ON course_plan_days (collection_id);

-- What a donor said about when they can come (issue 20): one statement per row, never changed;
-- for each date the latest statement covering it holds. Dates are the site's local dates.
CREATE TABLE donor_availability (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    donor_id BIGINT NOT NULL REFERENCES donors (id),
    from_date DATE NOT NULL,
    until_date DATE NOT NULL,
    available BOOLEAN NOT NULL,
    note TEXT,
    stated_by TEXT NOT NULL,
    stated_at TIMESTAMP NOT NULL,
    CHECK (from_date <= until_date)
);
CREATE INDEX donor_availability_donor ON donor_availability (donor_id, until_date);
