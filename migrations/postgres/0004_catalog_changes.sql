-- The catalog's change sequence: every write and delete appends one row in
-- its own transaction, so each replica can apply the changes to its own
-- indexes in order and resume from the last one it applied. Writers take a
-- transaction-scoped advisory lock before appending, so sequence numbers
-- become visible in commit order and a follower never skips one.
CREATE TABLE catalog_changes (
    seq           BIGSERIAL PRIMARY KEY,
    tenant        TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    version       BIGINT,           -- NULL: deleted
    ts_us         BIGINT NOT NULL
);

-- Replicas LISTEN on this channel; polling covers a lost connection.
CREATE FUNCTION catalog_changes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sovra_catalog_changes', NEW.seq::text);
    RETURN NEW;
END $$;
CREATE TRIGGER catalog_changes_notify AFTER INSERT ON catalog_changes
    FOR EACH ROW EXECUTE FUNCTION catalog_changes_notify();
