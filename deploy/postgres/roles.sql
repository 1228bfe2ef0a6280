-- Least privilege for Sovra on PostgreSQL.
--
-- Run as a superuser once per database, after `sovra migrate` has been run
-- by the owner role `sovra_owner`. The gateway then connects as `sovra_app`,
-- which may read and append to the audit trail but not change or delete it
-- (the append-only triggers refuse that for every role; these grants refuse
-- it before the triggers are reached, and keep `sovra_app` from dropping or
-- disabling them, which only a table owner or superuser can do).
--
--   psql -v app_password='...' -f deploy/postgres/roles.sql sovra
--
-- Safe to run again (after a new migration, say): roles are created only
-- when absent, grants are idempotent.

SELECT 'CREATE ROLE sovra_owner NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sovra_owner') \gexec
SELECT format('CREATE ROLE sovra_app LOGIN PASSWORD %L', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sovra_app') \gexec

GRANT CONNECT ON DATABASE :"DBNAME" TO sovra_app;
GRANT USAGE ON SCHEMA public TO sovra_app;

-- Audit: read and append only.
GRANT SELECT, INSERT ON audit_events, audit_event_documents, audit_checkpoints TO sovra_app;
-- Retention pruning deletes rows a signed checkpoint covers; grant DELETE
-- only to the role that runs `sovra audit prune` (or the gateway, when
-- audit.retention_days is set on it).
-- GRANT DELETE ON audit_events, audit_event_documents TO sovra_app;

-- Catalog: the documents, their ACL, metadata and chunk text are the
-- gateway's to write, replace and delete (the indexes are rebuilt from them).
GRANT SELECT, INSERT, UPDATE, DELETE ON documents, document_acl, document_metadata, chunks TO sovra_app;
-- The change sequence replicas follow: appended with each write, read by all.
GRANT SELECT, INSERT ON catalog_changes TO sovra_app;
GRANT USAGE ON SEQUENCE catalog_changes_seq_seq TO sovra_app;

-- Readiness reads the migration history.
GRANT SELECT ON _sqlx_migrations TO sovra_app;
