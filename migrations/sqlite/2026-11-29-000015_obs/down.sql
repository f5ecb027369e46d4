ALTER TABLE anc_results DROP COLUMN status;
