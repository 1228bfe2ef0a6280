-- The audit trail: append-only and hash-chained.
-- hash = SHA-256(prev_hash || canonical(record)); see services/audit/src/chain.rs.
CREATE TABLE audit_events (
    seq          BIGINT PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    ts_us        BIGINT NOT NULL,
    request_id   TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    subject      TEXT,
    tenant       TEXT,
    roles        TEXT NOT NULL,
    client_addr  TEXT,
    method       TEXT NOT NULL,
    route        TEXT NOT NULL,
    action       TEXT NOT NULL,
    status       BIGINT NOT NULL,
    latency_us   BIGINT NOT NULL,
    reason       TEXT,
    document_ids TEXT NOT NULL,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_events_ts ON audit_events (ts_us);
CREATE INDEX audit_events_subject ON audit_events (subject, seq);
CREATE INDEX audit_events_tenant ON audit_events (tenant, seq);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_request ON audit_events (request_id);

CREATE TABLE audit_event_documents (
    seq          BIGINT NOT NULL,
    document_id  TEXT NOT NULL,
    PRIMARY KEY (document_id, seq)
);

-- Signed retention checkpoints: the head of the chain at the last pruned record.
CREATE TABLE audit_checkpoints (
    seq          BIGINT PRIMARY KEY,
    hash         TEXT NOT NULL,
    ts_us        BIGINT NOT NULL,
    created_us   BIGINT NOT NULL,
    public_key   TEXT NOT NULL,
    signature    TEXT NOT NULL
);

-- Append-only: UPDATE, TRUNCATE and DELETE are refused, except DELETE of
-- records that a checkpoint already covers (retention pruning).
CREATE FUNCTION sovra_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('audit_events', 'audit_event_documents') THEN
        IF OLD.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'sovra: % is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION sovra_audit_guard();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION sovra_audit_guard();
CREATE TRIGGER audit_event_documents_append_only BEFORE UPDATE OR DELETE ON audit_event_documents
    FOR EACH ROW EXECUTE FUNCTION sovra_audit_guard();
CREATE TRIGGER audit_event_documents_no_truncate BEFORE TRUNCATE ON audit_event_documents
    FOR EACH STATEMENT EXECUTE FUNCTION sovra_audit_guard();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION sovra_audit_guard();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION sovra_audit_guard();
