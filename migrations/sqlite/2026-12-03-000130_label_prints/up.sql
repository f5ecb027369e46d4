-- Every printed label (issue 19): which version of the unit's label, in which format, by whom.
-- A version is one content of the label (its SHA-256); the content changes when the unit does
-- (irradiation, release, emergency release), and printing the same content again is a reprint.
CREATE TABLE label_prints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id BIGINT NOT NULL REFERENCES units (id),
    version INTEGER NOT NULL CHECK (version >= 1),
    format TEXT NOT NULL CHECK (format IN ('pdf', 'zpl')),
    dpi INTEGER CHECK (dpi IN (203, 300)),
    content_sha256 TEXT NOT NULL,
    printed_by TEXT NOT NULL,
    printed_at TIMESTAMP NOT NULL,
    CHECK ((format = 'zpl') = (dpi IS NOT NULL))
);
CREATE INDEX label_prints_unit ON label_prints (unit_id, id);
