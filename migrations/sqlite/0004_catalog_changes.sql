-- The catalog's change sequence: every write and delete appends one row in
-- its own transaction, so each replica can apply the changes to its own
-- indexes in order and resume from the last one it applied.
CREATE TABLE catalog_changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    version       INTEGER,          -- NULL: deleted
    ts_us         INTEGER NOT NULL
);
