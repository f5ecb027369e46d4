DROP INDEX allocations_unit;
DROP INDEX crossmatches_sample;
