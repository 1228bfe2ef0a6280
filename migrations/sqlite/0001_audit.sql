-- The audit trail: append-only and hash-chained (see migrations/postgres/0001_audit.sql).
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    ts_us        INTEGER NOT NULL,
    request_id   TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    subject      TEXT,
    tenant       TEXT,
    roles        TEXT NOT NULL,
    client_addr  TEXT,
    method       TEXT NOT NULL,
    route        TEXT NOT NULL,
    action       TEXT NOT NULL,
    status       INTEGER NOT NULL,
    latency_us   INTEGER NOT NULL,
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
    seq          INTEGER NOT NULL,
    document_id  TEXT NOT NULL,
    PRIMARY KEY (document_id, seq)
);

CREATE TABLE audit_checkpoints (
    seq          INTEGER PRIMARY KEY,
    hash         TEXT NOT NULL,
    ts_us        INTEGER NOT NULL,
    created_us   INTEGER NOT NULL,
    public_key   TEXT NOT NULL,
    signature    TEXT NOT NULL
);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'sovra: audit_events is append-only (UPDATE refused)'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints)
BEGIN SELECT RAISE(ABORT, 'sovra: audit_events is append-only (DELETE refused)'); END;
CREATE TRIGGER audit_event_documents_no_update BEFORE UPDATE ON audit_event_documents
BEGIN SELECT RAISE(ABORT, 'sovra: audit_event_documents is append-only (UPDATE refused)'); END;
CREATE TRIGGER audit_event_documents_no_delete BEFORE DELETE ON audit_event_documents
WHEN OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints)
BEGIN SELECT RAISE(ABORT, 'sovra: audit_event_documents is append-only (DELETE refused)'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'sovra: audit_checkpoints is append-only (UPDATE refused)'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'sovra: audit_checkpoints is append-only (DELETE refused)'); END;
