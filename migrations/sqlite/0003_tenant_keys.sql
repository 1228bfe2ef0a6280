-- Documents are keyed by (tenant, id): two tenants may use the same id, and
-- neither learns that the other does. Child rows carry the tenant too.
-- SQLite cannot change a primary key in place: each table is rebuilt.
CREATE TABLE documents_new (
    id            TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    title         TEXT NOT NULL,
    source        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    version       INTEGER NOT NULL,
    acl           TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_us    INTEGER NOT NULL,
    updated_us    INTEGER NOT NULL,
    chunk_count   INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);
INSERT INTO documents_new (id, tenant, title, source, content_type, content_hash, version, acl, metadata, created_by, created_us, updated_us, chunk_count, bytes)
    SELECT id, tenant, title, source, content_type, content_hash, version, acl, metadata, created_by, created_us, updated_us, chunk_count, bytes FROM documents;

CREATE TABLE document_acl_new (
    tenant        TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,   -- 'g' group, 'u' user
    principal     TEXT NOT NULL,
    PRIMARY KEY (tenant, document_id, kind, principal)
);
INSERT INTO document_acl_new (tenant, document_id, kind, principal)
    SELECT d.tenant, a.document_id, a.kind, a.principal FROM document_acl a JOIN documents d ON d.id = a.document_id;

CREATE TABLE document_metadata_new (
    tenant        TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (tenant, document_id, key)
);
INSERT INTO document_metadata_new (tenant, document_id, key, value)
    SELECT d.tenant, m.document_id, m.key, m.value FROM document_metadata m JOIN documents d ON d.id = m.document_id;

CREATE TABLE chunks_new (
    tenant        TEXT NOT NULL,
    chunk_id      TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    ordinal       INTEGER NOT NULL,
    text          TEXT NOT NULL,
    tokens        INTEGER NOT NULL,
    PRIMARY KEY (tenant, chunk_id)
);
INSERT INTO chunks_new (tenant, chunk_id, document_id, ordinal, text, tokens)
    SELECT d.tenant, c.chunk_id, c.document_id, c.ordinal, c.text, c.tokens FROM chunks c JOIN documents d ON d.id = c.document_id;

DROP TABLE chunks;
DROP TABLE document_metadata;
DROP TABLE document_acl;
DROP TABLE documents;
ALTER TABLE documents_new RENAME TO documents;
ALTER TABLE document_acl_new RENAME TO document_acl;
ALTER TABLE document_metadata_new RENAME TO document_metadata;
ALTER TABLE chunks_new RENAME TO chunks;
CREATE INDEX document_acl_principal ON document_acl (tenant, kind, principal, document_id);
CREATE INDEX document_metadata_kv ON document_metadata (tenant, key, value, document_id);
CREATE INDEX chunks_document ON chunks (tenant, document_id, ordinal);
