DROP TABLE anc_results;
DROP INDEX requests_order_identifier;
ALTER TABLE requests DROP COLUMN order_value;
ALTER TABLE requests DROP COLUMN order_system;
ALTER TABLE hospitals DROP COLUMN order_system;
ALTER TABLE hospitals DROP COLUMN mrn_system;
