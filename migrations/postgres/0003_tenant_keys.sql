-- Documents are keyed by (tenant, id): two tenants may use the same id, and
-- neither learns that the other does. Child rows carry the tenant too.
ALTER TABLE document_acl ADD COLUMN tenant TEXT;
UPDATE document_acl a SET tenant = d.tenant FROM documents d WHERE d.id = a.document_id;
DELETE FROM document_acl WHERE tenant IS NULL;
ALTER TABLE document_acl ALTER COLUMN tenant SET NOT NULL;
ALTER TABLE document_acl DROP CONSTRAINT document_acl_pkey;
ALTER TABLE document_acl ADD PRIMARY KEY (tenant, document_id, kind, principal);
DROP INDEX document_acl_principal;
CREATE INDEX document_acl_principal ON document_acl (tenant, kind, principal, document_id);

ALTER TABLE document_metadata ADD COLUMN tenant TEXT;
UPDATE document_metadata m SET tenant = d.tenant FROM documents d WHERE d.id = m.document_id;
DELETE FROM document_metadata WHERE tenant IS NULL;
ALTER TABLE document_metadata ALTER COLUMN tenant SET NOT NULL;
ALTER TABLE document_metadata DROP CONSTRAINT document_metadata_pkey;
ALTER TABLE document_metadata ADD PRIMARY KEY (tenant, document_id, key);
DROP INDEX document_metadata_kv;
CREATE INDEX document_metadata_kv ON document_metadata (tenant, key, value, document_id);

ALTER TABLE chunks ADD COLUMN tenant TEXT;
UPDATE chunks c SET tenant = d.tenant FROM documents d WHERE d.id = c.document_id;
DELETE FROM chunks WHERE tenant IS NULL;
ALTER TABLE chunks ALTER COLUMN tenant SET NOT NULL;
ALTER TABLE chunks DROP CONSTRAINT chunks_pkey;
ALTER TABLE chunks ADD PRIMARY KEY (tenant, chunk_id);
DROP INDEX chunks_document;
CREATE INDEX chunks_document ON chunks (tenant, document_id, ordinal);

ALTER TABLE documents DROP CONSTRAINT documents_pkey;
ALTER TABLE documents ADD PRIMARY KEY (tenant, id);
DROP INDEX documents_tenant;
