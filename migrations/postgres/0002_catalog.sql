-- The documents catalog: the source of truth the indexes are rebuilt from.
CREATE TABLE documents (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    title         TEXT NOT NULL,
    source        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    version       BIGINT NOT NULL,
    acl           TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_us    BIGINT NOT NULL,
    updated_us    BIGINT NOT NULL,
    chunk_count   BIGINT NOT NULL,
    bytes         BIGINT NOT NULL
);
CREATE INDEX documents_tenant ON documents (tenant, id);

-- ACL principals and metadata pairs, one row each, so lists filter in SQL.
CREATE TABLE document_acl (
    document_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,   -- 'g' group, 'u' user
    principal     TEXT NOT NULL,
    PRIMARY KEY (document_id, kind, principal)
);
CREATE INDEX document_acl_principal ON document_acl (kind, principal, document_id);

CREATE TABLE document_metadata (
    document_id   TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (document_id, key)
);
CREATE INDEX document_metadata_kv ON document_metadata (key, value, document_id);

CREATE TABLE chunks (
    chunk_id      TEXT PRIMARY KEY,
    document_id   TEXT NOT NULL,
    ordinal       BIGINT NOT NULL,
    text          TEXT NOT NULL,
    tokens        BIGINT NOT NULL
);
CREATE INDEX chunks_document ON chunks (document_id, ordinal);
