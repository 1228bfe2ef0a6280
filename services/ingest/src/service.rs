//! Writing and deleting documents across the catalog and the indexes as one
//! unit: parse and chunk first (a bad file writes nothing), stage the
//! catalog change in a transaction, apply it to the index, then commit; if
//! the index fails the transaction rolls back, and if the commit fails the
//! index is put back to the previous version from the catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sovra_auth::Acl;
use sovra_catalog::{Catalog, CatalogError, ChunkRow, Document};
use sovra_index::{ChunkEntry, IndexError, LexicalIndex};
use tokio::sync::Mutex;

use crate::{Chunker, Format, IngestError, Limits, chunk::chunk_id, parse};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("document `{0}` belongs to another tenant")]
    Conflict(String),
    #[error("background task failed: {0}")]
    Task(String),
}

/// A document to write.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: String,
    pub tenant: String,
    pub title: String,
    pub source: String,
    pub format: Format,
    pub bytes: Vec<u8>,
    pub acl: Acl,
    pub metadata: BTreeMap<String, String>,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub document: Document,
    pub created: bool,
    /// Identical content under the same id: nothing was written.
    pub unchanged: bool,
}

pub struct DocumentService {
    catalog: Catalog,
    index: Arc<LexicalIndex>,
    chunker: Arc<Chunker>,
    limits: Limits,
    /// One writer at a time: the index has a single writer anyway.
    write: Mutex<()>,
}

fn content_hash(d: &NewDocument) -> String {
    let mut h = Sha256::new();
    for part in [
        d.tenant.as_bytes(),
        d.title.as_bytes(),
        d.format.content_type().as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let acl = serde_json::to_vec(&d.acl).unwrap_or_default();
    let meta = serde_json::to_vec(&d.metadata).unwrap_or_default();
    for part in [acl.as_slice(), meta.as_slice(), d.bytes.as_slice()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

fn entries(doc: &Document, chunks: &[ChunkRow]) -> Vec<ChunkEntry> {
    chunks
        .iter()
        .map(|c| ChunkEntry {
            document_id: doc.id.clone(),
            chunk_id: c.chunk_id.clone(),
            ordinal: u32::try_from(c.ordinal).unwrap_or(u32::MAX),
            tenant: doc.tenant.clone(),
            title: doc.title.clone(),
            text: c.text.clone(),
            acl: doc.acl.clone(),
            metadata: doc.metadata.clone(),
        })
        .collect()
}

impl DocumentService {
    pub fn new(
        catalog: Catalog,
        index: Arc<LexicalIndex>,
        chunker: Arc<Chunker>,
        limits: Limits,
    ) -> Self {
        Self {
            catalog,
            index,
            chunker,
            limits,
            write: Mutex::new(()),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn index(&self) -> &Arc<LexicalIndex> {
        &self.index
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    /// Writes (or replaces) a document everywhere, or nowhere.
    pub async fn ingest(&self, req: NewDocument) -> Result<Outcome, ServiceError> {
        let hash = content_hash(&req);
        let _guard = self.write.lock().await;
        if let Some(existing) = self.catalog.get(&req.id).await? {
            if existing.tenant != req.tenant {
                return Err(ServiceError::Conflict(req.id));
            }
            if existing.content_hash == hash {
                return Ok(Outcome {
                    document: existing,
                    created: false,
                    unchanged: true,
                });
            }
        }
        // Parse and chunk before anything is written.
        let (chunker, limits, bytes, format, id) = (
            self.chunker.clone(),
            self.limits,
            req.bytes.clone(),
            req.format,
            req.id.clone(),
        );
        let chunks = Self::blocking(move || {
            let _span = tracing::info_span!("parse_and_chunk").entered();
            let blocks = parse(&bytes, format, limits)?;
            Ok(chunker.chunk(&id, &blocks)?)
        })
        .await?;
        let rows: Vec<ChunkRow> = chunks
            .iter()
            .map(|c| ChunkRow {
                chunk_id: chunk_id(&req.id, c.ordinal, &c.text),
                ordinal: i64::from(c.ordinal),
                text: c.text.clone(),
                tokens: i64::try_from(c.tokens).unwrap_or(i64::MAX),
            })
            .collect();
        let now = chrono_now_us();
        let doc = Document {
            id: req.id.clone(),
            tenant: req.tenant.clone(),
            title: req.title.clone(),
            source: req.source.clone(),
            content_type: req.format.content_type().to_owned(),
            content_hash: hash,
            version: 0,
            acl: req.acl.clone(),
            metadata: req.metadata.clone(),
            created_by: req.created_by.clone(),
            created_us: now,
            updated_us: now,
            chunk_count: 0,
            bytes: i64::try_from(req.bytes.len()).unwrap_or(i64::MAX),
        };
        let mut staged = self.catalog.begin_write(&req.id).await?;
        if staged
            .previous
            .as_ref()
            .is_some_and(|(p, _)| p.tenant != req.tenant)
        {
            let _ = staged.rollback().await;
            return Err(ServiceError::Conflict(req.id));
        }
        let doc = match self.catalog.stage_upsert(&mut staged, doc, &rows).await {
            Ok(d) => d,
            Err(e) => {
                let _ = staged.rollback().await;
                return Err(e.into());
            }
        };
        let created = staged.previous.is_none();
        let previous = staged.previous.clone();
        let new_entries = entries(&doc, &rows);
        let index = self.index.clone();
        let id = doc.id.clone();
        let indexed = Self::blocking(move || {
            let _span = tracing::info_span!("index_write").entered();
            Ok(index.replace_document(&id, &new_entries)?)
        })
        .await;
        if let Err(e) = indexed {
            let _ = staged.rollback().await;
            return Err(e);
        }
        if let Err(e) = staged.commit().await {
            self.restore(&doc.id, previous).await;
            return Err(e.into());
        }
        Ok(Outcome {
            document: doc,
            created,
            unchanged: false,
        })
    }

    /// Puts the index back as the catalog still has it.
    async fn restore(&self, id: &str, previous: Option<(Document, Vec<ChunkRow>)>) {
        let index = self.index.clone();
        let id = id.to_owned();
        let result = Self::blocking(move || {
            let old = previous.map(|(d, c)| entries(&d, &c)).unwrap_or_default();
            Ok(index.replace_document(&id, &old)?)
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not restore the index after a failed catalog commit");
        }
    }

    /// Removes a document from the index and the catalog. `None`: no such document.
    pub async fn delete(&self, id: &str) -> Result<Option<Document>, ServiceError> {
        let _guard = self.write.lock().await;
        let mut staged = self.catalog.begin_write(id).await?;
        let Some((doc, _)) = staged.previous.clone() else {
            let _ = staged.rollback().await;
            return Ok(None);
        };
        if let Err(e) = self.catalog.stage_delete(&mut staged).await {
            let _ = staged.rollback().await;
            return Err(e.into());
        }
        let index = self.index.clone();
        let doc_id = id.to_owned();
        if let Err(e) = Self::blocking(move || Ok(index.delete_document(&doc_id)?)).await {
            let _ = staged.rollback().await;
            return Err(e);
        }
        let previous = staged.previous.clone();
        if let Err(e) = staged.commit().await {
            self.restore(id, previous).await;
            return Err(e.into());
        }
        Ok(Some(doc))
    }
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
