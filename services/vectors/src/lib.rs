//! The vector store: one trait, two backends.
//!
//! * [`EdgeStore`]: qdrant-edge, Qdrant's engine in-process, on local disk
//!   (the embedded default; survives restarts through its write-ahead log).
//! * [`ServerStore`]: a Qdrant server or cluster over gRPC (qdrant-client).
//!
//! [`VectorQuery`] cannot be built without a [`Principal`]: the tenant and
//! ACL are a payload filter inside the vector search, on keyword payload
//! indexes created with the collection, never a filter applied afterwards.

mod edge;
#[cfg(any(test, feature = "test-nodes"))]
pub mod nodes;
mod server;

use std::collections::BTreeMap;

use async_trait::async_trait;
use sovra_auth::{AccessScope, Acl, fields};

pub use edge::EdgeStore;
pub use server::{ClusterLayout, ServerStore};

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The store failed (qdrant-edge's or the Qdrant client's error).
    #[error("vector store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("vector store task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// One chunk's vector with the payload the filter needs.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    pub chunk_id: String,
    pub document_id: String,
    /// The catalog version of the document this chunk belongs to.
    pub version: i64,
    pub tenant: String,
    pub acl: Acl,
    pub metadata: BTreeMap<String, String>,
    pub vector: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub chunk_id: String,
    pub document_id: String,
    pub score: f32,
}

/// A nearest-neighbour search, always within an access scope.
pub struct VectorQuery {
    scope: AccessScope,
    pub vector: Vec<f32>,
    pub top_k: usize,
    pub metadata: BTreeMap<String, String>,
}

impl VectorQuery {
    pub fn new(scope: impl Into<AccessScope>, vector: Vec<f32>, top_k: usize) -> Self {
        Self {
            scope: scope.into(),
            vector,
            top_k,
            metadata: BTreeMap::new(),
        }
    }

    pub fn scope(&self) -> &AccessScope {
        &self.scope
    }
}

#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Adds or replaces points (by chunk id).
    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError>;
    /// Removes every point of a tenant's document (ids are unique within a
    /// tenant only).
    async fn delete_document(&self, tenant: &str, document_id: &str) -> Result<(), VectorError>;
    /// Removes every point of each listed (tenant, document id), then adds
    /// `points`: a batch of documents replaced in one write (a store that
    /// persists per call makes it durable once).
    async fn replace_documents(
        &self,
        documents: &[(String, String)],
        points: Vec<VectorPoint>,
    ) -> Result<(), VectorError> {
        for (tenant, id) in documents {
            self.delete_document(tenant, id).await?;
        }
        self.upsert(points).await
    }
    /// Nearest chunks the principal may see, best first.
    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>, VectorError>;
    /// Per (tenant, document id): how many points, and the catalog version
    /// they carry (`None` when they disagree), for reconciliation.
    async fn document_counts(&self) -> Result<BTreeMap<(String, String), DocState>, VectorError>;
    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Builds search indexes for what was written since the last call
    /// (qdrant-edge runs no background optimizer; a Qdrant server does).
    async fn optimize(&self) -> Result<(), VectorError> {
        Ok(())
    }
}

/// Point ids are UUIDs derived from the tenant and the chunk id, so an
/// upsert of the same chunk replaces it in either backend, and two tenants'
/// equal ids never meet.
pub fn point_uuid(tenant: &str, chunk_id: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0u8]);
    h.update(chunk_id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The payload stored with each point.
pub(crate) fn payload(p: &VectorPoint) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "chunk_id": p.chunk_id,
        "document_id": p.document_id,
        "version": p.version,
        "meta": p.metadata,
    });
    payload[DOC_VERSION] = serde_json::json!(doc_version(&p.document_id, p.version));
    payload[fields::TENANT] = serde_json::json!(p.tenant);
    payload[fields::ACL_GROUPS] = serde_json::json!(p.acl.groups);
    payload[fields::ACL_USERS] = serde_json::json!(p.acl.users);
    payload
}

/// Searches whose ACL filter admits at most this share of a shard's points
/// use ACORN (Qdrant's filtered-HNSW search through neighbours'
/// neighbours). Measured on 100,000 points (random vectors, 20 groups, 100
/// hits asked): without ACORN a reader of 2 groups (10%) got 1 to 3 hits on
/// 2 of 50 searches, while readers of 3, 4 and 6 groups (15 to 30%) got all
/// 100 every time in about 2 ms; with ACORN at Qdrant's default threshold
/// (40%) the 6-group reader took 23 to 34 ms (a build running beside).
/// Below Qdrant's full-scan threshold the filtered points are scanned
/// exactly either way.
pub(crate) const ACORN_MAX_SELECTIVITY: f64 = 0.15;

/// The embedded store searches exactly (every admitted point scored, no
/// graph) when Qdrant's estimate of the points the ACL filter admits is at
/// most this many: for a reader of a tenth of 100,000 points (384
/// dimensions) the exact scan took 9.8 ms p50, 12.3 ms p99, and ACORN
/// through the graph 24 ms p50, 40 ms p99 (`bench/ingest-search`, the
/// vector-leg stage). Exact search also finds every nearest neighbour.
pub(crate) const EXACT_MAX_POINTS: usize = 20_000;

/// Payload fields with keyword indexes, created before any data arrives.
pub(crate) const KEYWORD_FIELDS: [&str; 5] = [
    fields::TENANT,
    fields::ACL_GROUPS,
    fields::ACL_USERS,
    "document_id",
    DOC_VERSION,
];

/// A payload key holding the document id and its version together, so that
/// one facet per tenant tells reconciliation which version every document's
/// points carry.
pub(crate) const DOC_VERSION: &str = "doc_version";

pub(crate) fn doc_version(document_id: &str, version: i64) -> String {
    format!("{document_id}\u{1f}{version}")
}

/// Folds facet hits of `DOC_VERSION` values into per-document states.
pub(crate) fn fold_doc_versions(
    tenant: &str,
    hits: impl IntoIterator<Item = (String, usize)>,
    out: &mut BTreeMap<(String, String), DocState>,
) {
    for (value, count) in hits {
        if count == 0 {
            continue;
        }
        let Some((id, version)) = value.rsplit_once('\u{1f}') else {
            continue;
        };
        let version = version.parse::<i64>().ok();
        let state = out
            .entry((tenant.to_owned(), id.to_owned()))
            .or_insert(DocState { chunks: 0, version });
        if state.chunks > 0 && state.version != version {
            state.version = None;
        }
        state.chunks += count;
    }
}

/// What an index holds of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocState {
    pub chunks: usize,
    /// The catalog version its chunks carry; `None` when they disagree.
    pub version: Option<i64>,
}

#[cfg(test)]
mod contract;
