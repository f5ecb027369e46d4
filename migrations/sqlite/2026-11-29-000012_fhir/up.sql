-- The FHIR R5 facade (issue 15). A hospital names its own identifier systems: the one its MRNs
-- belong to (Patient.identifier) and the one its orders are numbered in (ServiceRequest.identifier).
-- NULL: granulo's default system for the hospital, urn:granulo:hospital:<code>:mrn / :order.
ALTER TABLE hospitals ADD COLUMN mrn_system TEXT;
ALTER TABLE hospitals ADD COLUMN order_system TEXT;

-- The placer's order identifier of a request. Unique per hospital and system: an order is placed
-- once, and a retried create finds the first (If-None-Exist). NULLs are distinct.
ALTER TABLE requests ADD COLUMN order_system TEXT;
ALTER TABLE requests ADD COLUMN order_value TEXT;
CREATE UNIQUE INDEX requests_order_identifier ON requests (hospital_id, order_system, order_value);

-- Absolute neutrophil counts reported by the hospital (FHIR Observation), appended and never
-- changed. One that names an allocation feeds that transfusion's outcome: before the transfusion
-- started it is a pre-transfusion count, after it a post-transfusion count.
CREATE TABLE anc_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id BIGINT NOT NULL REFERENCES patients (id),
    allocation_id BIGINT REFERENCES allocations (id),
    anc_per_ul INTEGER NOT NULL CHECK (anc_per_ul >= 0),
    -- The Observation status the laboratory gave it, kept so that it reads back as it was sent.
    status TEXT NOT NULL DEFAULT 'final' CHECK (status IN ('final', 'amended', 'corrected')),
    effective_at TIMESTAMP NOT NULL,
    recorded_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX anc_results_patient ON anc_results (patient_id, effective_at);
CREATE INDEX anc_results_allocation ON anc_results (allocation_id, effective_at);
