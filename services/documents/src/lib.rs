//! Writing and deleting documents across the catalog, the lexical index and
//! the vector store as one unit: parse, chunk and embed first (a bad file
//! writes nothing), stage the catalog change in a transaction, apply it to
//! both indexes, then commit. If an index write fails the transaction rolls
//! back and the indexes are put back to the catalog's version; if the commit
//! fails, likewise. [`DocumentService::reconcile`] repairs whatever a crash
//! left between the three.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sovra_auth::{Acl, Principal};
use sovra_catalog::{Catalog, CatalogError, ChunkRow, Document};
use sovra_index::{ChunkEntry, IndexError, LexicalIndex};
use sovra_inference::{Embedder, InferenceError, TextKind};
use sovra_vectors::{VectorError, VectorPoint, VectorStore};
use tokio::sync::Mutex;
use tracing::Instrument;

use sovra_ingest::{Chunker, Format, IngestError, Limits, Parsing};

mod follow;
pub use follow::{FollowObserver, FollowProgress, Follower, FollowerOptions};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Embedding(#[from] InferenceError),
    /// The document exists but the caller may not change it: answered
    /// exactly like a document that does not exist.
    #[error("no document `{0}` that you may change")]
    NotFound(String),
    #[error("background task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("the document could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
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
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    chunker: Arc<Chunker>,
    limits: Limits,
    parsing: Parsing,
    /// One writer at a time: the index has a single writer anyway.
    write: Mutex<()>,
    /// Change-sequence numbers this replica wrote and applied itself: its
    /// follower skips them.
    own_changes: std::sync::Mutex<std::collections::HashSet<i64>>,
}

fn content_hash(d: &NewDocument) -> Result<String, ServiceError> {
    let mut h = Sha256::new();
    for part in [
        d.tenant.as_bytes(),
        d.title.as_bytes(),
        d.format.content_type().as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let acl = serde_json::to_vec(&d.acl)?;
    let meta = serde_json::to_vec(&d.metadata)?;
    for part in [acl.as_slice(), meta.as_slice(), d.bytes.as_slice()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(hex::encode(h.finalize()))
}

fn entries(doc: &Document, chunks: &[ChunkRow]) -> Vec<ChunkEntry> {
    chunks
        .iter()
        .map(|c| ChunkEntry {
            version: doc.version,
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
        vectors: Arc<dyn VectorStore>,
        embedder: Arc<dyn Embedder>,
        chunker: Arc<Chunker>,
        limits: Limits,
    ) -> Self {
        Self {
            catalog,
            index,
            vectors,
            embedder,
            chunker,
            limits,
            parsing: Parsing::InProcess,
            write: Mutex::new(()),
            own_changes: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Records a change this replica applies itself (before its commit, so
    /// the follower never sees it unmarked).
    fn note_own(&self, seq: Option<i64>) {
        if let (Some(seq), Ok(mut own)) = (seq, self.own_changes.lock()) {
            own.insert(seq);
        }
    }

    fn forget_own(&self, seq: Option<i64>) {
        if let (Some(seq), Ok(mut own)) = (seq, self.own_changes.lock()) {
            own.remove(&seq);
        }
    }

    /// Whether change `seq` was written (and applied) here; forgets it.
    pub(crate) fn take_own(&self, seq: i64) -> bool {
        self.own_changes
            .lock()
            .map(|mut own| own.remove(&seq))
            .unwrap_or(false)
    }

    /// Makes this replica's indexes hold the catalog's current version of
    /// `tenant`'s document `id` (nothing, if it is gone). With `vectors`
    /// false only the lexical index is written (a shared vector store
    /// already holds what the writing replica put there).
    pub async fn sync_document(
        &self,
        tenant: &str,
        id: &str,
        vectors: bool,
    ) -> Result<(), ServiceError> {
        let _guard = self.write.lock().await;
        let current = match self.catalog.lookup(tenant, id).await? {
            Some(doc) => {
                let rows = self.catalog.chunks(tenant, id).await?;
                Some((doc, rows))
            }
            None => None,
        };
        let version = current.as_ref().map(|(d, c)| (d, c.as_slice()));
        if vectors {
            return self.apply(tenant, id, version, None).await;
        }
        self.write_lexical(tenant, id, version).await
    }

    /// Makes the lexical index hold exactly `version` of the document.
    async fn write_lexical(
        &self,
        tenant: &str,
        id: &str,
        version: Option<(&Document, &[ChunkRow])>,
    ) -> Result<(), ServiceError> {
        let index = self.index.clone();
        let entries = version.map(|(d, c)| entries(d, c)).unwrap_or_default();
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        Self::blocking(move || {
            let _span = tracing::info_span!("index_write").entered();
            Ok(index.replace_document(&tenant, &id, &entries)?)
        })
        .await
    }

    /// Where documents are parsed (in this process unless set).
    pub fn with_parsing(mut self, parsing: Parsing) -> Self {
        self.parsing = parsing;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn index(&self) -> &Arc<LexicalIndex> {
        &self.index
    }

    pub fn vectors(&self) -> &Arc<dyn VectorStore> {
        &self.vectors
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(ServiceError::Task)?
    }

    /// Embeds chunks (on a blocking thread) into points for the vector store.
    async fn points(
        &self,
        doc: &Document,
        chunks: &[ChunkRow],
    ) -> Result<Vec<VectorPoint>, ServiceError> {
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let embedder = self.embedder.clone();
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let vectors = Self::blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(embedder.embed(&refs, TextKind::Passage)?)
        })
        .await?;
        Ok(chunks
            .iter()
            .zip(vectors)
            .map(|(c, e)| VectorPoint {
                version: doc.version,
                chunk_id: c.chunk_id.clone(),
                document_id: doc.id.clone(),
                tenant: doc.tenant.clone(),
                acl: doc.acl.clone(),
                metadata: doc.metadata.clone(),
                vector: e.vector,
            })
            .collect())
    }

    /// Makes both indexes hold exactly this version of `tenant`'s document
    /// `id` (`None`: nothing). `points` are its vectors when already computed.
    async fn apply(
        &self,
        tenant: &str,
        id: &str,
        version: Option<(&Document, &[ChunkRow])>,
        points: Option<Vec<VectorPoint>>,
    ) -> Result<(), ServiceError> {
        let points = match (version, points) {
            (_, Some(p)) => p,
            (Some((doc, chunks)), None) => self.points(doc, chunks).await?,
            (None, None) => Vec::new(),
        };
        async {
            self.vectors.delete_document(tenant, id).await?;
            self.vectors.upsert(points).await
        }
        .instrument(tracing::info_span!("vector_write"))
        .await?;
        self.write_lexical(tenant, id, version).await
    }

    /// Puts both indexes back as the catalog still has the document.
    async fn restore(&self, tenant: &str, id: &str, previous: Option<(Document, Vec<ChunkRow>)>) {
        let version = previous.as_ref().map(|(d, c)| (d, c.as_slice()));
        if let Err(e) = self.apply(tenant, id, version, None).await {
            tracing::error!(error = %e, document = id, "could not restore the indexes; reconciliation at start-up will");
        }
    }

    /// Writes (or replaces) a document everywhere, or nowhere. Replacing
    /// needs [`Principal::may_change`] on the stored version; without it the
    /// answer is [`ServiceError::NotFound`], before anything about the
    /// stored content (such as "unchanged") can leak.
    pub async fn ingest(
        &self,
        writer: &Principal,
        req: NewDocument,
    ) -> Result<Outcome, ServiceError> {
        let hash = content_hash(&req)?;
        let _guard = self.write.lock().await;
        if let Some(existing) = self.catalog.lookup(&req.tenant, &req.id).await? {
            if !writer.may_change(&existing.tenant, &existing.acl, &existing.created_by) {
                return Err(ServiceError::NotFound(req.id));
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
        let blocks = self
            .parsing
            .parse(req.bytes.clone(), req.format, self.limits)
            .instrument(tracing::info_span!("parse"))
            .await?;
        let (chunker, id) = (self.chunker.clone(), req.id.clone());
        let chunks = Self::blocking(move || {
            let _span = tracing::info_span!("chunk").entered();
            Ok(chunker.chunk(&id, &blocks)?)
        })
        .await?;
        let rows: Vec<ChunkRow> = chunks
            .iter()
            .map(|c| ChunkRow {
                chunk_id: c.id.clone(),
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
            chunk_count: i64::try_from(rows.len()).unwrap_or(i64::MAX),
            bytes: i64::try_from(req.bytes.len()).unwrap_or(i64::MAX),
        };
        // Embedding is the slow part: do it before taking the catalog lock.
        let mut points = self.points(&doc, &rows).await?;
        let mut staged = self.catalog.begin_write(&req.tenant, &req.id).await?;
        match staged.previous.as_ref() {
            Some((p, _)) if !writer.may_change(&p.tenant, &p.acl, &p.created_by) => {
                let _ = staged.rollback().await;
                return Err(ServiceError::NotFound(req.id));
            }
            _ => {}
        }
        let doc = match self.catalog.stage_upsert(&mut staged, doc, &rows).await {
            Ok(d) => d,
            Err(e) => {
                let _ = staged.rollback().await;
                return Err(e.into());
            }
        };
        // The version is the catalog's to give: the points were embedded
        // before it was known.
        for p in &mut points {
            p.version = doc.version;
        }
        let created = staged.previous.is_none();
        self.apply_and_commit(
            staged,
            &doc.tenant,
            &doc.id,
            Some((&doc, &rows)),
            Some(points),
        )
        .await?;
        Ok(Outcome {
            document: doc,
            created,
            unchanged: false,
        })
    }

    /// Removes a document from both indexes and the catalog, under the same
    /// rule as a replacement. `None`: no such document, or none `deleter`
    /// may change (the two are not told apart).
    pub async fn delete(
        &self,
        deleter: &Principal,
        id: &str,
    ) -> Result<Option<Document>, ServiceError> {
        let _guard = self.write.lock().await;
        let tenant = deleter.tenant.as_str();
        let mut staged = self.catalog.begin_write(tenant, id).await?;
        let Some((doc, _)) = staged
            .previous
            .clone()
            .filter(|(d, _)| deleter.may_change(&d.tenant, &d.acl, &d.created_by))
        else {
            let _ = staged.rollback().await;
            return Ok(None);
        };
        if let Err(e) = self.catalog.stage_delete(&mut staged).await {
            let _ = staged.rollback().await;
            return Err(e.into());
        }
        self.apply_and_commit(staged, tenant, id, None, None)
            .await?;
        Ok(Some(doc))
    }

    /// The second half of every write: both indexes take `version` (`None`:
    /// the document is gone), then the staged catalog change commits. If
    /// either fails, the indexes are put back to the catalog's previous
    /// version and nothing is committed. The change is marked as this
    /// replica's own before the commit, so its follower never re-applies it.
    async fn apply_and_commit(
        &self,
        staged: sovra_catalog::Staged,
        tenant: &str,
        id: &str,
        version: Option<(&Document, &[ChunkRow])>,
        points: Option<Vec<VectorPoint>>,
    ) -> Result<(), ServiceError> {
        let previous = staged.previous.clone();
        if let Err(e) = self.apply(tenant, id, version, points).await {
            self.restore(tenant, id, previous).await;
            let _ = staged.rollback().await;
            return Err(e);
        }
        let seq = staged.change_seq;
        self.note_own(seq);
        if let Err(e) = staged.commit().await {
            self.forget_own(seq);
            self.restore(tenant, id, previous).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Compares the catalog (the source of truth) with the lexical index and
    /// the vector store, and repairs every difference: re-indexes documents
    /// missing or incomplete in either, removes what the catalog lacks.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ServiceError> {
        let _guard = self.write.lock().await;
        let catalog = self.catalog.all_ids().await?;
        let index = self.index.clone();
        let lexical = Self::blocking(move || Ok(index.document_counts()?)).await?;
        let vectors = self.vectors.document_counts().await?;
        let mut report = ReconcileReport {
            documents: catalog.len(),
            ..Default::default()
        };
        for (key, (chunks, version)) in &catalog {
            // Each index must hold exactly the catalog's version: the count
            // of its chunks and the version they carry (an ACL or metadata
            // change keeps the count and changes the version).
            let want = (
                usize::try_from(*chunks).unwrap_or(usize::MAX),
                Some(*version),
            );
            let lexical_ok = lexical.get(key).map(|s| (s.chunks, s.version)) == Some(want);
            let vectors_ok = vectors.get(key).map(|s| (s.chunks, s.version)) == Some(want);
            if !lexical_ok || !vectors_ok {
                let (tenant, id) = key;
                let Some(doc) = self.catalog.lookup(tenant, id).await? else {
                    continue;
                };
                let rows = self.catalog.chunks(tenant, id).await?;
                self.apply(tenant, id, Some((&doc, &rows)), None).await?;
                report.repaired.push(format!("{tenant}/{id}"));
                // A new embedding model starts from an empty vector store:
                // every document is embedded again, with progress in the log.
                if report.repaired.len().is_multiple_of(100) {
                    tracing::info!(
                        repaired = report.repaired.len(),
                        documents = catalog.len(),
                        "reconciling the indexes with the catalog"
                    );
                }
            }
        }
        let strays: std::collections::BTreeSet<&(String, String)> = lexical
            .keys()
            .chain(vectors.keys())
            .filter(|key| !catalog.contains_key(*key))
            .collect();
        for (tenant, id) in strays {
            self.apply(tenant, id, None, None).await?;
            report.removed.push(format!("{tenant}/{id}"));
        }
        Ok(report)
    }
}

/// What reconciliation found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    pub documents: usize,
    /// Re-indexed from the catalog (`tenant/id`): missing or incomplete in an index.
    pub repaired: Vec<String>,
    /// Removed from the indexes (`tenant/id`): not in the catalog.
    pub removed: Vec<String>,
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
