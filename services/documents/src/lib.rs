//! Writing and deleting documents across the catalog, the lexical index and
//! the vector store as one unit: parse and chunk first (a bad file writes
//! nothing), then, for a batch of documents from one or many callers (group
//! commit), stage the catalog changes in one transaction (a savepoint per
//! document), embed while Tantivy takes them, write the vectors, then
//! commit. If an index write fails the transaction rolls back and the
//! indexes are put back to the catalog's version; if the commit fails,
//! likewise. [`DocumentService::reconcile`] repairs whatever a crash left
//! between the three.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sovra_auth::{Acl, Principal};
use sovra_catalog::{Catalog, CatalogError, ChunkRow, Document, StagedDocument};
use sovra_index::{ChunkEntry, IndexError, LexicalIndex};
use sovra_inference::{Embedder, Embedding, InferenceError, TextKind};
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
    /// The batch this document was committed with failed as a whole
    /// (indexes or catalog commit): nothing of it was written.
    #[error("the write failed; nothing was written: {0}")]
    BatchFailed(String),
    /// The write was cut short before its outcome was known.
    #[error("the write was interrupted")]
    Interrupted,
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

/// The documents and chunks of the items at `which`, for the embedder.
fn to_embed(items: &[Item], which: &[usize]) -> Vec<(Document, Vec<ChunkRow>)> {
    which
        .iter()
        .map(|&i| (items[i].parsed.doc.clone(), items[i].parsed.rows.clone()))
        .collect()
}

/// Gives each item at `which` its points, or its embedding error as its
/// result; true when one failed.
fn take_embeddings(
    items: &mut [Item],
    which: Vec<usize>,
    embedded: Vec<Result<Vec<VectorPoint>, ServiceError>>,
) -> bool {
    let mut failed = false;
    for (i, points) in which.into_iter().zip(embedded) {
        match points {
            Ok(p) => items[i].points = Some(p),
            Err(e) => {
                items[i].result = Some(Err(e));
                failed = true;
            }
        }
    }
    failed
}

/// The most documents one group commit writes: the ingestion bench's
/// bulk writes reach 0.96 of the embedder's speed at 16 documents a batch
/// and 0.97 at 64, so larger batches gain nothing, while every request in a
/// batch waits for all of it (four concurrent bulk requests of 64, merged
/// into one batch of 256, each waited for the four).
pub const GROUP_MAX_DOCUMENTS: usize = 64;

/// A batch with at most this many chunks to embed embeds them inside the
/// catalog transaction, while Tantivy writes: a one-chunk write took 60 ms
/// p50 that way and 76 ms with the embedding before the transaction
/// (`bench/ingest-search`, same run conditions); eight short chunks hold
/// SQLite's write lock well under a second even on a busy CPU.
pub const OVERLAP_MAX_CHUNKS: usize = 8;

pub struct DocumentService {
    catalog: Catalog,
    index: Arc<LexicalIndex>,
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    chunker: Arc<Chunker>,
    limits: Limits,
    parsing: Parsing,
    /// One writer at a time: the index has a single writer anyway. Held by
    /// a batch write's own task (see [`DocumentService::ingest_many`]).
    write: Arc<Mutex<()>>,
    /// Documents ready to commit, taken by the next batch write.
    pending: std::sync::Mutex<Vec<Pending>>,
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

/// The vector-store points of `doc`'s chunks, one embedding each taken
/// from `vectors` (fewer if it runs out).
fn to_points(
    doc: &Document,
    chunks: &[ChunkRow],
    vectors: &mut impl Iterator<Item = Embedding>,
) -> Vec<VectorPoint> {
    chunks
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
        .collect()
}

/// Per (tenant, id): a document's stored version and chunks, or `None`.
type Versions = BTreeMap<(String, String), Option<(Document, Vec<ChunkRow>)>>;

/// How many documents of one bulk write are parsed at a time.
const PREPARE_CONCURRENCY: usize = 4;

/// A document checked and parsed: what is left is embedding and writing.
enum Step {
    Parsed(Parsed),
    /// The same content is stored under the same id already.
    Unchanged(Outcome),
}

struct Parsed {
    /// As it will be stored (version 0 until the catalog gives one).
    doc: Document,
    rows: Vec<ChunkRow>,
}

/// One caller's documents waiting for the next batch write.
struct Pending {
    writer: Principal,
    parsed: Vec<Parsed>,
    reply: tokio::sync::oneshot::Sender<Vec<Result<Outcome, ServiceError>>>,
}

/// One document of a batch write, until it has its result.
struct Item {
    /// Which caller of the batch it came from.
    caller: usize,
    writer: Arc<Principal>,
    parsed: Parsed,
    /// Its chunks' vectors, once embedded (kept across attempts).
    points: Option<Vec<VectorPoint>>,
    result: Option<Result<Outcome, ServiceError>>,
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
            write: Arc::new(Mutex::new(())),
            pending: std::sync::Mutex::new(Vec::new()),
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
            return self.apply(tenant, id, version).await;
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

    /// Embeds passages on a blocking thread.
    async fn embed_passages(&self, texts: Vec<String>) -> Result<Vec<Embedding>, ServiceError> {
        let embedder = self.embedder.clone();
        Self::blocking(move || {
            let _span = tracing::info_span!("embed", chunks = texts.len()).entered();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(embedder.embed(&refs, TextKind::Passage)?)
        })
        .await
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
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let vectors = self.embed_passages(texts).await?;
        Ok(to_points(doc, chunks, &mut vectors.into_iter()))
    }

    /// Makes both indexes hold exactly this version of `tenant`'s document
    /// `id` (`None`: nothing), embedding its chunks again.
    async fn apply(
        &self,
        tenant: &str,
        id: &str,
        version: Option<(&Document, &[ChunkRow])>,
    ) -> Result<(), ServiceError> {
        let points = match version {
            Some((doc, chunks)) => self.points(doc, chunks).await?,
            None => Vec::new(),
        };
        self.vectors
            .replace_documents(&[(tenant.to_owned(), id.to_owned())], points)
            .instrument(tracing::info_span!("vector_write"))
            .await?;
        self.write_lexical(tenant, id, version).await
    }

    /// Puts both indexes back as the catalog still has the document.
    async fn restore(&self, tenant: &str, id: &str, previous: Option<(Document, Vec<ChunkRow>)>) {
        let version = previous.as_ref().map(|(d, c)| (d, c.as_slice()));
        if let Err(e) = self.apply(tenant, id, version).await {
            tracing::error!(error = %e, document = id, "could not restore the indexes; reconciliation at start-up will");
        }
    }

    /// Writes (or replaces) a document everywhere, or nowhere. Replacing
    /// needs [`Principal::may_change`] on the stored version; without it the
    /// answer is [`ServiceError::NotFound`], before anything about the
    /// stored content (such as "unchanged") can leak. Concurrent writes are
    /// committed together (see [`DocumentService::ingest_many`]).
    pub async fn ingest(
        self: &Arc<Self>,
        writer: &Principal,
        req: NewDocument,
    ) -> Result<Outcome, ServiceError> {
        self.ingest_many(writer, vec![req])
            .await
            .pop()
            .unwrap_or(Err(ServiceError::Interrupted))
    }

    /// Writes many documents, each as one unit: every document is checked,
    /// parsed and chunked on its own (a few at a time), then committed with
    /// whatever other writes are waiting: one catalog transaction (a
    /// savepoint per document), the chunks of all of them embedded together
    /// while Tantivy takes them (one commit), one vector-store write. A
    /// document that fails is reported in its place and the rest are
    /// written. The results are in the order of `reqs`.
    pub async fn ingest_many(
        self: &Arc<Self>,
        writer: &Principal,
        reqs: Vec<NewDocument>,
    ) -> Vec<Result<Outcome, ServiceError>> {
        let steps: Vec<Result<Step, ServiceError>> =
            futures_util::stream::iter(reqs.into_iter().map(|r| self.prepare(writer, r)))
                .buffered(PREPARE_CONCURRENCY)
                .collect()
                .await;
        let mut results: Vec<Option<Result<Outcome, ServiceError>>> = Vec::new();
        let mut parsed = Vec::new();
        let mut slots = Vec::new();
        for step in steps {
            match step {
                Ok(Step::Parsed(p)) => {
                    slots.push(results.len());
                    parsed.push(p);
                    results.push(None);
                }
                Ok(Step::Unchanged(o)) => results.push(Some(Ok(o))),
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if !parsed.is_empty() {
            let written = self.commit_grouped(writer.clone(), parsed).await;
            for (slot, r) in slots.into_iter().zip(written) {
                results[slot] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ServiceError::Interrupted)))
            .collect()
    }

    /// Checks the writer's right over the stored version, then parses and
    /// chunks: nothing is written here.
    async fn prepare(&self, writer: &Principal, req: NewDocument) -> Result<Step, ServiceError> {
        let hash = content_hash(&req)?;
        if let Some(existing) = self.catalog.lookup(&req.tenant, &req.id).await? {
            if !writer.may_change(&existing.tenant, &existing.acl, &existing.created_by) {
                return Err(ServiceError::NotFound(req.id));
            }
            if existing.content_hash == hash {
                return Ok(Step::Unchanged(Outcome {
                    document: existing,
                    created: false,
                    unchanged: true,
                }));
            }
        }
        let blocks = self
            .parsing
            .parse(req.bytes.clone(), req.format, self.limits)
            .instrument(tracing::info_span!("parse", document = %req.id))
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
            id: req.id,
            tenant: req.tenant,
            title: req.title,
            source: req.source,
            content_type: req.format.content_type().to_owned(),
            content_hash: hash,
            version: 0,
            acl: req.acl,
            metadata: req.metadata,
            created_by: req.created_by,
            created_us: now,
            updated_us: now,
            chunk_count: i64::try_from(rows.len()).unwrap_or(i64::MAX),
            bytes: i64::try_from(req.bytes.len()).unwrap_or(i64::MAX),
        };
        Ok(Step::Parsed(Parsed { doc, rows }))
    }

    /// Embeds the chunks of all `docs` in one call (the embedder batches
    /// them); if that fails, each document alone, so that a failure is
    /// reported against the document that caused it. The points carry
    /// version 0 until the catalog's is known.
    async fn embed_all(
        &self,
        docs: Vec<(Document, Vec<ChunkRow>)>,
    ) -> Vec<Result<Vec<VectorPoint>, ServiceError>> {
        if docs.is_empty() {
            return Vec::new();
        }
        let texts: Vec<String> = docs
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|c| c.text.clone()))
            .collect();
        match self.embed_passages(texts).await {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                docs.iter()
                    .map(|(doc, rows)| {
                        let points = to_points(doc, rows, vectors.by_ref());
                        if points.len() == rows.len() {
                            Ok(points)
                        } else {
                            Err(ServiceError::Embedding(InferenceError::Runtime(format!(
                                "the embedder returned {} vectors for {} chunks",
                                points.len(),
                                rows.len()
                            ))))
                        }
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, documents = docs.len(), "embedding a batch failed; embedding its documents one by one");
                let mut out = Vec::with_capacity(docs.len());
                for (doc, rows) in &docs {
                    out.push(self.points(doc, rows).await);
                }
                out
            }
        }
    }

    /// Hands `parsed` documents to whichever write is next: the caller that
    /// takes the write lock commits what is waiting at that moment, its own
    /// documents and other callers', in batches of at most
    /// [`GROUP_MAX_DOCUMENTS`] (group commit), and then what was queued
    /// meanwhile. It writes in a task of its own, holding the lock, so a
    /// caller that goes away mid-write neither cuts it short nor lets
    /// another overlap it. Each caller waits for its own documents' batch
    /// only: one whose documents an earlier batch took along returns with
    /// that batch, not when the queue behind it has drained (under steady
    /// bulk writes that wait had no end, and requests answered 504).
    async fn commit_grouped(
        self: &Arc<Self>,
        writer: Principal,
        parsed: Vec<Parsed>,
    ) -> Vec<Result<Outcome, ServiceError>> {
        let n = parsed.len();
        let interrupted = || (0..n).map(|_| Err(ServiceError::Interrupted)).collect();
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.push(Pending {
                writer,
                parsed,
                reply,
            });
        } else {
            return interrupted();
        }
        let guard = tokio::select! {
            biased;
            written = &mut answer => return written.unwrap_or_else(|_| interrupted()),
            guard = self.write.clone().lock_owned() => guard,
        };
        let service = self.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            // Whatever is queued, ours included unless an earlier batch took
            // it along; then whatever was queued meanwhile, so that nothing
            // waits for a next writer (its own may have gone away).
            loop {
                let batch = service.next_batch();
                if batch.is_empty() {
                    break;
                }
                service.write_batch(batch).await;
            }
        });
        tokio::spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a batch write failed");
            }
        });
        answer.await.unwrap_or_else(|_| interrupted())
    }

    /// The oldest waiting requests, whole, up to [`GROUP_MAX_DOCUMENTS`]
    /// documents (a larger request goes alone).
    fn next_batch(&self) -> Vec<Pending> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let (mut taken, mut documents) = (0, 0);
        for p in pending.iter() {
            if taken > 0 && documents + p.parsed.len() > GROUP_MAX_DOCUMENTS {
                break;
            }
            documents += p.parsed.len();
            taken += 1;
        }
        pending.drain(..taken).collect()
    }

    /// Writes a batch and answers each caller, document by document.
    async fn write_batch(&self, batch: Vec<Pending>) {
        let documents: usize = batch.iter().map(|p| p.parsed.len()).sum();
        let span = tracing::info_span!("write_batch", documents, callers = batch.len());
        async {
            let mut items = Vec::with_capacity(documents);
            let mut replies = Vec::with_capacity(batch.len());
            for (caller, p) in batch.into_iter().enumerate() {
                let writer = Arc::new(p.writer);
                for parsed in p.parsed {
                    items.push(Item {
                        caller,
                        writer: writer.clone(),
                        parsed,
                        points: None,
                        result: None,
                    });
                }
                replies.push(p.reply);
            }
            while self.write_items(&mut items).await {}
            let mut answers: Vec<Vec<Result<Outcome, ServiceError>>> =
                replies.iter().map(|_| Vec::new()).collect();
            for item in items {
                if let Some(answer) = answers.get_mut(item.caller) {
                    answer.push(item.result.unwrap_or(Err(ServiceError::Interrupted)));
                }
            }
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        .instrument(span)
        .await
    }

    /// One attempt at the items without a result. A batch with more than
    /// [`OVERLAP_MAX_CHUNKS`] chunks to embed is embedded first, outside the
    /// catalog transaction: SQLite takes one writer at a time and the audit
    /// trail writes there too, so a large batch embedding for seconds inside
    /// the transaction kept every audited request waiting past its busy
    /// timeout (a 503 for each meanwhile). A document whose embedding fails
    /// there is reported alone. A smaller batch embeds inside, while Tantivy
    /// writes, which saves a one-chunk write about a fifth of its time.
    ///
    /// Then: stages them in one catalog transaction (a savepoint each; one
    /// refused or failing there is reported alone), then embeds those not
    /// yet embedded while Tantivy takes the staged versions, writes the
    /// vectors, and commits. If a document's embedding fails here, it is
    /// reported, the indexes are put back, nothing commits, and `true` asks
    /// for another attempt without it (the others keep their embeddings).
    /// A failure of an index or of the commit fails every staged document:
    /// the indexes are put back and nothing of the batch is written.
    async fn write_items(&self, items: &mut [Item]) -> bool {
        let waiting: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.result.is_none() && i.points.is_none())
            .map(|(n, _)| n)
            .collect();
        let chunks: usize = waiting.iter().map(|&i| items[i].parsed.rows.len()).sum();
        if chunks > OVERLAP_MAX_CHUNKS {
            let embedded = self.embed_all(to_embed(items, &waiting)).await;
            take_embeddings(items, waiting, embedded);
            if items.iter().all(|i| i.result.is_some()) {
                return false;
            }
        }
        let mut txn = match self.catalog.begin_batch().await {
            Ok(t) => t,
            Err(e) => {
                let why = e.to_string();
                for item in items.iter_mut().filter(|i| i.result.is_none()) {
                    item.result = Some(Err(ServiceError::BatchFailed(why.clone())));
                }
                return false;
            }
        };
        // Staged: the item's index, with the document as staged and its
        // state before.
        let mut staged: Vec<(usize, StagedDocument)> = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            if item.result.is_some() {
                continue;
            }
            let writer = item.writer.clone();
            let result = self
                .catalog
                .stage_in_batch(
                    &mut txn,
                    item.parsed.doc.clone(),
                    &item.parsed.rows,
                    |prev| prev.is_none_or(|d| writer.may_change(&d.tenant, &d.acl, &d.created_by)),
                )
                .await;
            match result {
                Ok(Some(s)) => staged.push((i, s)),
                Ok(None) => {
                    item.result = Some(Err(ServiceError::NotFound(item.parsed.doc.id.clone())))
                }
                Err(e) => item.result = Some(Err(e.into())),
            }
        }
        if staged.is_empty() {
            let _ = txn.rollback().await;
            return false;
        }
        // The last version of each document in the batch wins (the same id
        // may come twice); its state before the batch is what a failure
        // restores.
        let mut last: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut before = Versions::new();
        for (n, (_, s)) in staged.iter().enumerate() {
            let key = (s.document.tenant.clone(), s.document.id.clone());
            before
                .entry(key.clone())
                .or_insert_with(|| s.previous.clone());
            last.insert(key, n);
        }
        let entries: Vec<(String, String, Vec<ChunkEntry>)> = last
            .values()
            .map(|&n| {
                let (i, s) = &staged[n];
                let d = &s.document;
                (
                    d.tenant.clone(),
                    d.id.clone(),
                    entries(d, &items[*i].parsed.rows),
                )
            })
            .collect();
        let index = self.index.clone();
        let lexical = Self::blocking(move || {
            let _span = tracing::info_span!("index_write").entered();
            let refs: Vec<(&str, &str, &[ChunkEntry])> = entries
                .iter()
                .map(|(t, i, e)| (t.as_str(), i.as_str(), e.as_slice()))
                .collect();
            Ok(index.replace_documents(&refs)?)
        });
        let waiting: Vec<usize> = staged
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| items[*i].points.is_none())
            .collect();
        // The embedder computes while Tantivy writes.
        let (embedded, lexical) = tokio::join!(self.embed_all(to_embed(items, &waiting)), lexical);
        let retry = take_embeddings(items, waiting, embedded);
        let applied = match lexical {
            Err(e) => Err(e),
            Ok(()) if retry => {
                self.restore_all(before).await;
                let _ = txn.rollback().await;
                return true;
            }
            Ok(()) => {
                let keys: Vec<(String, String)> = last.keys().cloned().collect();
                let points: Vec<VectorPoint> = last
                    .values()
                    .flat_map(|&n| {
                        let (i, s) = &staged[n];
                        let version = s.document.version;
                        items[*i].points.iter().flatten().map(move |p| VectorPoint {
                            version,
                            ..p.clone()
                        })
                    })
                    .collect();
                self.vectors
                    .replace_documents(&keys, points)
                    .instrument(tracing::info_span!("vector_write"))
                    .await
                    .map_err(ServiceError::from)
            }
        };
        let seqs: Vec<i64> = staged.iter().map(|(_, s)| s.change_seq).collect();
        let outcome = match applied {
            Err(e) => {
                self.restore_all(before).await;
                let _ = txn.rollback().await;
                Err(e.to_string())
            }
            Ok(()) => {
                // Marked as this replica's own before the commit, so its
                // follower never re-applies them.
                for seq in &seqs {
                    self.note_own(Some(*seq));
                }
                match txn.commit().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        for seq in &seqs {
                            self.forget_own(Some(*seq));
                        }
                        self.restore_all(before).await;
                        Err(e.to_string())
                    }
                }
            }
        };
        for (i, s) in staged {
            items[i].result = Some(match &outcome {
                Ok(()) => Ok(Outcome {
                    created: s.previous.is_none(),
                    document: s.document,
                    unchanged: false,
                }),
                Err(why) => Err(ServiceError::BatchFailed(why.clone())),
            });
        }
        false
    }

    async fn restore_all(&self, before: Versions) {
        for ((tenant, id), previous) in before {
            self.restore(&tenant, &id, previous).await;
        }
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
        self.remove_and_commit(staged, tenant, id).await?;
        Ok(Some(doc))
    }

    /// The second half of a delete: both indexes drop the document, then
    /// the staged catalog change commits. If either fails, the indexes are
    /// put back to the catalog's previous version and nothing is committed.
    /// The change is marked as this replica's own before the commit, so its
    /// follower never re-applies it.
    async fn remove_and_commit(
        &self,
        staged: sovra_catalog::Staged,
        tenant: &str,
        id: &str,
    ) -> Result<(), ServiceError> {
        let previous = staged.previous.clone();
        if let Err(e) = self.apply(tenant, id, None).await {
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
                self.apply(tenant, id, Some((&doc, &rows))).await?;
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
            self.apply(tenant, id, None).await?;
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
