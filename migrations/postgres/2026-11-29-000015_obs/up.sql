-- The FHIR Observation status a hospital's laboratory gave an absolute neutrophil count (final,
-- amended or corrected), kept so that the count reads back as it was sent. Counts recorded before
-- this column existed were all final.
ALTER TABLE anc_results ADD COLUMN status TEXT NOT NULL DEFAULT 'final'
    CHECK (status IN ('final', 'amended', 'corrected'));
