//! The documents catalog (same database as the audit trail): documents,
//! their ACL and metadata, and their chunks' text, so that every index can
//! be rebuilt from it. Writes are staged in a transaction that the caller
//! commits only after the indexes have taken the change.

use std::collections::BTreeMap;

use serde::Serialize;
use sovra_auth::{AccessScope, Acl};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt catalog row for document {id}: {message}")]
    Corrupt { id: String, message: String },
    #[error("invalid catalog query: {field}: {message}")]
    InvalidQuery {
        field: &'static str,
        message: String,
    },
    #[error("document {id} could not be encoded: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
}

/// A catalogued document.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Document {
    pub id: String,
    pub tenant: String,
    pub title: String,
    pub source: String,
    pub content_type: String,
    pub content_hash: String,
    pub version: i64,
    pub acl: Acl,
    pub metadata: BTreeMap<String, String>,
    pub created_by: String,
    pub created_us: i64,
    pub updated_us: i64,
    pub chunk_count: i64,
    pub bytes: i64,
}

/// A chunk's text, as stored for rebuilding indexes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRow {
    pub chunk_id: String,
    pub ordinal: i64,
    pub text: String,
    pub tokens: i64,
}

/// A chunk's text and where it belongs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkText {
    pub document_id: String,
    pub ordinal: i64,
    pub text: String,
    pub title: String,
    /// The document's ACL now: a hit is served only if it admits the caller.
    pub acl: Acl,
    pub version: i64,
}

/// Filters for listing; visibility to the principal is always applied.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub metadata: BTreeMap<String, String>,
    pub cursor: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentPage {
    pub documents: Vec<Document>,
    pub next_cursor: Option<String>,
}

/// One entry of the catalog's change sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub tenant: String,
    pub document_id: String,
    /// The version written; `None`: the document was deleted.
    pub version: Option<i64>,
    /// When the change was staged, in microseconds since the epoch.
    pub ts_us: i64,
}

/// The PostgreSQL channel a change is announced on (by a trigger).
pub const CHANGES_CHANNEL: &str = "sovra_catalog_changes";

/// Wakes `wake` on every change announced on PostgreSQL at `url`, for as
/// long as it runs; reconnects after a lost connection (the follower polls
/// meanwhile).
pub async fn listen_for_changes(url: String, wake: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                Ok(()) => {
                    while listener.recv().await.is_ok() {
                        wake.notify_one();
                    }
                    tracing::warn!(
                        "the catalog change notifications stopped; polling, reconnecting"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN for catalog changes failed; polling"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no connection for catalog change notifications; polling")
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

/// The advisory lock that serializes appends to the change sequence.
const CHANGES_LOCK: i64 = 0x5307_7a00_c4a1_0001;

#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    postgres: bool,
}

/// A write in progress: commit once the indexes hold the change.
pub struct Staged {
    tx: Transaction<'static, Any>,
    /// The document and chunks before this write (to restore indexes if the
    /// commit fails), or `None` for a new document.
    pub previous: Option<(Document, Vec<ChunkRow>)>,
    /// The change-sequence number this write appended, once staged.
    pub change_seq: Option<i64>,
}

/// Several documents' writes in one transaction (see [`Catalog::begin_batch`]).
pub struct Batch {
    tx: Transaction<'static, Any>,
}

impl Batch {
    pub async fn commit(self) -> Result<(), CatalogError> {
        Ok(self.tx.commit().await?)
    }
    pub async fn rollback(self) -> Result<(), CatalogError> {
        Ok(self.tx.rollback().await?)
    }
}

/// One document staged in a [`Batch`].
#[derive(Debug, Clone)]
pub struct StagedDocument {
    /// The document and chunks before this write, or `None` for a new one.
    pub previous: Option<(Document, Vec<ChunkRow>)>,
    /// As stored: its version is the previous one plus one.
    pub document: Document,
    /// The change-sequence number this write appended.
    pub change_seq: i64,
}

impl Staged {
    pub async fn commit(self) -> Result<(), CatalogError> {
        Ok(self.tx.commit().await?)
    }
    pub async fn rollback(self) -> Result<(), CatalogError> {
        Ok(self.tx.rollback().await?)
    }
}

const DOC_COLUMNS: &str = "id, tenant, title, source, content_type, content_hash, version, acl, metadata, created_by, created_us, updated_us, chunk_count, bytes";

impl Catalog {
    /// The catalog in `db` (its migrations applied by `Database::migrate`).
    pub fn new(db: &sovra_storage::Database) -> Self {
        Self {
            pool: db.pool().clone(),
            postgres: db.backend() == sovra_storage::Backend::Postgres,
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, CatalogError> {
        Ok(if self.postgres {
            self.pool.begin().await?
        } else {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        })
    }

    async fn get_in(
        tx: &mut Transaction<'static, Any>,
        tenant: &str,
        id: &str,
        lock: bool,
    ) -> Result<Option<(Document, Vec<ChunkRow>)>, CatalogError> {
        let sql = format!(
            "SELECT {DOC_COLUMNS} FROM documents WHERE tenant = $1 AND id = $2{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.to_owned())
            .bind(id.to_owned())
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(None);
        };
        let doc = document_from_row(&row)?;
        let chunks = sqlx::query("SELECT chunk_id, ordinal, text, tokens FROM chunks WHERE tenant = $1 AND document_id = $2 ORDER BY ordinal")
            .bind(tenant.to_owned())
            .bind(id.to_owned())
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(chunk_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((doc, chunks)))
    }

    /// Document `id` if the scope admits it (its tenant, and its ACL names
    /// the subject or a group): every read goes through here.
    pub async fn get(
        &self,
        scope: &AccessScope,
        id: &str,
    ) -> Result<Option<Document>, CatalogError> {
        Ok(self
            .lookup(scope.tenant(), id)
            .await?
            .filter(|d| scope.admits(&d.tenant, &d.acl)))
    }

    /// Document `id` of `tenant` whoever may read it: for the write path,
    /// which applies its own rule (`Principal::may_change`), and for
    /// keeping the indexes in step. Ids are unique within a tenant only.
    pub async fn lookup(&self, tenant: &str, id: &str) -> Result<Option<Document>, CatalogError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM documents WHERE tenant = $1 AND id = $2"
        )))
        .bind(tenant.to_owned())
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| document_from_row(&r)).transpose()
    }

    pub async fn chunks(&self, tenant: &str, id: &str) -> Result<Vec<ChunkRow>, CatalogError> {
        sqlx::query("SELECT chunk_id, ordinal, text, tokens FROM chunks WHERE tenant = $1 AND document_id = $2 ORDER BY ordinal")
            .bind(tenant.to_owned())
            .bind(id.to_owned())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(chunk_from_row)
            .collect()
    }

    /// Looks the document up under a write lock, for the caller to decide.
    pub async fn begin_write(&self, tenant: &str, id: &str) -> Result<Staged, CatalogError> {
        let mut tx = self.begin().await?;
        let previous = Self::get_in(&mut tx, tenant, id, self.postgres).await?;
        Ok(Staged {
            tx,
            previous,
            change_seq: None,
        })
    }

    /// Starts a transaction for several documents' writes, each staged in
    /// its own savepoint by [`Catalog::stage_in_batch`]: one document that
    /// fails is rolled back alone, and the rest commit together.
    pub async fn begin_batch(&self) -> Result<Batch, CatalogError> {
        Ok(Batch {
            tx: self.begin().await?,
        })
    }

    /// Stages `doc` and its chunks in `batch` under a savepoint, if
    /// `allowed` admits the stored version (read under a write lock; `None`
    /// for a new document). `Ok(None)`: refused, nothing staged. A database
    /// error rolls this document back alone and the batch stays usable.
    pub async fn stage_in_batch(
        &self,
        batch: &mut Batch,
        doc: Document,
        chunks: &[ChunkRow],
        allowed: impl FnOnce(Option<&Document>) -> bool,
    ) -> Result<Option<StagedDocument>, CatalogError> {
        sqlx::query("SAVEPOINT sovra_document")
            .execute(&mut *batch.tx)
            .await?;
        let staged = async {
            let previous = Self::get_in(&mut batch.tx, &doc.tenant, &doc.id, self.postgres).await?;
            if !allowed(previous.as_ref().map(|(d, _)| d)) {
                return Ok(None);
            }
            let (document, change_seq) = Self::upsert_in(
                &mut batch.tx,
                self.postgres,
                previous.as_ref().map(|(d, _)| d),
                doc,
                chunks,
            )
            .await?;
            Ok(Some(StagedDocument {
                previous,
                document,
                change_seq,
            }))
        }
        .await;
        let end = match &staged {
            Ok(Some(_)) => "RELEASE SAVEPOINT sovra_document",
            Ok(None) | Err(_) => "ROLLBACK TO SAVEPOINT sovra_document",
        };
        sqlx::query(end).execute(&mut *batch.tx).await?;
        staged
    }

    /// Writes `doc` (versioned after `previous`) with its ACL, metadata and
    /// chunks, and appends the change; returns the stored document and the
    /// change's sequence number.
    async fn upsert_in(
        tx: &mut Transaction<'static, Any>,
        postgres: bool,
        previous: Option<&Document>,
        mut doc: Document,
        chunks: &[ChunkRow],
    ) -> Result<(Document, i64), CatalogError> {
        if let Some(prev) = previous {
            doc.version = prev.version + 1;
            doc.created_us = prev.created_us;
            doc.created_by = prev.created_by.clone();
            Self::delete_rows(tx, &doc.tenant, &doc.id).await?;
        } else {
            doc.version = 1;
        }
        doc.chunk_count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
        let encode = |source| CatalogError::Encode {
            id: doc.id.clone(),
            source,
        };
        let acl = serde_json::to_string(&doc.acl).map_err(encode)?;
        let meta = serde_json::to_string(&doc.metadata).map_err(encode)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO documents ({DOC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(doc.id.clone())
        .bind(doc.tenant.clone())
        .bind(doc.title.clone())
        .bind(doc.source.clone())
        .bind(doc.content_type.clone())
        .bind(doc.content_hash.clone())
        .bind(doc.version)
        .bind(acl)
        .bind(meta)
        .bind(doc.created_by.clone())
        .bind(doc.created_us)
        .bind(doc.updated_us)
        .bind(doc.chunk_count)
        .bind(doc.bytes)
        .execute(&mut **tx)
        .await?;
        for (kind, list) in [("g", &doc.acl.groups), ("u", &doc.acl.users)] {
            for p in list {
                sqlx::query(
                    "INSERT INTO document_acl (tenant, document_id, kind, principal) VALUES ($1, $2, $3, $4)",
                )
                .bind(doc.tenant.clone())
                .bind(doc.id.clone())
                .bind(kind)
                .bind(p.clone())
                .execute(&mut **tx)
                .await?;
            }
        }
        for (k, v) in &doc.metadata {
            sqlx::query(
                "INSERT INTO document_metadata (tenant, document_id, key, value) VALUES ($1, $2, $3, $4)",
            )
            .bind(doc.tenant.clone())
            .bind(doc.id.clone())
            .bind(k.clone())
            .bind(v.clone())
            .execute(&mut **tx)
            .await?;
        }
        for batch in chunks.chunks(100) {
            let mut sql = String::from(
                "INSERT INTO chunks (tenant, chunk_id, document_id, ordinal, text, tokens) VALUES ",
            );
            for i in 0..batch.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in batch {
                q = q
                    .bind(doc.tenant.clone())
                    .bind(c.chunk_id.clone())
                    .bind(doc.id.clone())
                    .bind(c.ordinal)
                    .bind(c.text.clone())
                    .bind(c.tokens);
            }
            q.execute(&mut **tx).await?;
        }
        let seq =
            Self::append_change(tx, postgres, &doc.tenant, &doc.id, Some(doc.version)).await?;
        Ok((doc, seq))
    }

    /// Appends one row to the change sequence inside the write's
    /// transaction. On PostgreSQL a transaction-scoped advisory lock first
    /// serializes appenders, so sequence numbers become visible in commit
    /// order (SQLite's writers are serialized already).
    async fn append_change(
        tx: &mut Transaction<'static, Any>,
        postgres: bool,
        tenant: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<i64, CatalogError> {
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CHANGES_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        let row = sqlx::query(
            "INSERT INTO catalog_changes (tenant, document_id, version, ts_us) VALUES ($1, $2, $3, $4) RETURNING seq",
        )
        .bind(tenant.to_owned())
        .bind(id.to_owned())
        .bind(version)
        .bind(chrono::Utc::now().timestamp_micros())
        .fetch_one(&mut **tx)
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub async fn changes_after(&self, seq: i64, limit: i64) -> Result<Vec<Change>, CatalogError> {
        sqlx::query(
            "SELECT seq, tenant, document_id, version, ts_us FROM catalog_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit.max(1))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Change {
                seq: r.try_get("seq")?,
                tenant: r.try_get("tenant")?,
                document_id: r.try_get("document_id")?,
                version: r.try_get("version")?,
                ts_us: r.try_get("ts_us")?,
            })
        })
        .collect()
    }

    /// The newest change-sequence number (0 before any write).
    pub async fn last_change_seq(&self) -> Result<i64, CatalogError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM catalog_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("seq")?)
    }

    /// Stages the removal of the staged document.
    pub async fn stage_delete(&self, staged: &mut Staged) -> Result<(), CatalogError> {
        if let Some((prev, _)) = &staged.previous {
            let (tenant, id) = (prev.tenant.clone(), prev.id.clone());
            Self::delete_rows(&mut staged.tx, &tenant, &id).await?;
            staged.change_seq =
                Some(Self::append_change(&mut staged.tx, self.postgres, &tenant, &id, None).await?);
        }
        Ok(())
    }

    async fn delete_rows(
        tx: &mut Transaction<'static, Any>,
        tenant: &str,
        id: &str,
    ) -> Result<(), CatalogError> {
        for table in ["chunks", "document_acl", "document_metadata", "documents"] {
            let column = if table == "documents" {
                "id"
            } else {
                "document_id"
            };
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE tenant = $1 AND {column} = $2"
            )))
            .bind(tenant.to_owned())
            .bind(id.to_owned())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Documents the principal may see, in its tenant, by id; cursor-paged.
    pub async fn list(
        &self,
        scope: &AccessScope,
        filter: &ListFilter,
    ) -> Result<DocumentPage, CatalogError> {
        let mut args: Vec<String> = Vec::new();
        let bind = |v: String, args: &mut Vec<String>| {
            args.push(v);
            format!("${}", args.len())
        };
        let mut sql = format!(
            "SELECT {DOC_COLUMNS} FROM documents d WHERE d.tenant = {}",
            bind(scope.tenant().to_owned(), &mut args)
        );
        let mut who_sql = format!(
            "SELECT document_id FROM document_acl WHERE tenant = d.tenant AND ((kind = 'u' AND principal = {})",
            bind(scope.subject().to_owned(), &mut args)
        );
        if !scope.groups().is_empty() {
            let groups: Vec<String> = scope
                .groups()
                .iter()
                .map(|g| bind(g.clone(), &mut args))
                .collect();
            who_sql.push_str(&format!(
                " OR (kind = 'g' AND principal IN ({}))",
                groups.join(", ")
            ));
        }
        who_sql.push(')');
        sql.push_str(&format!(" AND d.id IN ({who_sql})"));
        for (k, v) in &filter.metadata {
            let (k, v) = (bind(k.clone(), &mut args), bind(v.clone(), &mut args));
            sql.push_str(&format!(" AND d.id IN (SELECT document_id FROM document_metadata WHERE tenant = d.tenant AND key = {k} AND value = {v})"));
        }
        if let Some(c) = &filter.cursor {
            sql.push_str(&format!(" AND d.id > {}", bind(c.clone(), &mut args)));
        }
        let limit = filter.limit.clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY d.id LIMIT {}", limit + 1));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in args {
            q = q.bind(a);
        }
        let mut documents = q
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(document_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if documents.len() > limit as usize {
            documents.truncate(limit as usize);
            documents.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DocumentPage {
            documents,
            next_cursor,
        })
    }

    /// The current chunks of `tenant` with their document's title, ACL and
    /// version, by chunk id, in one query per 500 ids: what search results
    /// are checked against before they leave the gateway.
    pub async fn chunk_texts(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, ChunkText>, CatalogError> {
        let mut out = std::collections::HashMap::new();
        for batch in ids.chunks(500) {
            let params: Vec<String> = (2..=batch.len() + 1).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT c.chunk_id, c.document_id, c.ordinal, c.text, d.title, d.acl, d.version FROM chunks c JOIN documents d ON d.tenant = c.tenant AND d.id = c.document_id WHERE c.tenant = $1 AND c.chunk_id IN ({})",
                params.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.to_owned());
            for id in batch {
                q = q.bind(id.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                let chunk_id: String = r.try_get("chunk_id")?;
                let acl = serde_json::from_str(&r.try_get::<String, _>("acl")?).map_err(|e| {
                    CatalogError::Corrupt {
                        id: chunk_id.clone(),
                        message: e.to_string(),
                    }
                })?;
                out.insert(
                    chunk_id,
                    ChunkText {
                        document_id: r.try_get("document_id")?,
                        ordinal: r.try_get("ordinal")?,
                        text: r.try_get("text")?,
                        title: r.try_get("title")?,
                        acl,
                        version: r.try_get("version")?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Every document's (tenant, id) with its chunk count and version
    /// (what reconciliation expects each index to hold).
    pub async fn all_ids(&self) -> Result<BTreeMap<(String, String), (i64, i64)>, CatalogError> {
        let rows = sqlx::query("SELECT tenant, id, chunk_count, version FROM documents")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    (
                        r.try_get::<String, _>("tenant")?,
                        r.try_get::<String, _>("id")?,
                    ),
                    (
                        r.try_get::<i64, _>("chunk_count")?,
                        r.try_get::<i64, _>("version")?,
                    ),
                ))
            })
            .collect()
    }
}

fn document_from_row(r: &AnyRow) -> Result<Document, CatalogError> {
    let id: String = r.try_get("id")?;
    let corrupt = |m: String| CatalogError::Corrupt {
        id: id.clone(),
        message: m,
    };
    Ok(Document {
        tenant: r.try_get("tenant")?,
        title: r.try_get("title")?,
        source: r.try_get("source")?,
        content_type: r.try_get("content_type")?,
        content_hash: r.try_get("content_hash")?,
        version: r.try_get("version")?,
        acl: serde_json::from_str(&r.try_get::<String, _>("acl")?)
            .map_err(|e| corrupt(e.to_string()))?,
        metadata: serde_json::from_str(&r.try_get::<String, _>("metadata")?)
            .map_err(|e| corrupt(e.to_string()))?,
        created_by: r.try_get("created_by")?,
        created_us: r.try_get("created_us")?,
        updated_us: r.try_get("updated_us")?,
        chunk_count: r.try_get("chunk_count")?,
        bytes: r.try_get("bytes")?,
        id,
    })
}

fn chunk_from_row(r: &AnyRow) -> Result<ChunkRow, CatalogError> {
    Ok(ChunkRow {
        chunk_id: r.try_get("chunk_id")?,
        ordinal: r.try_get("ordinal")?,
        text: r.try_get("text")?,
        tokens: r.try_get("tokens")?,
    })
}
