DROP TABLE stimulations;
DROP TABLE collections;
DROP TABLE devices;
DROP TABLE donations;
DROP TABLE deferrals;
DROP TABLE donors;
DROP TABLE policy;
