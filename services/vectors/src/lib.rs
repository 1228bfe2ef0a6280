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
mod server;

use std::collections::BTreeMap;

use async_trait::async_trait;
use sovra_auth::{AccessScope, Acl, fields};

pub use edge::EdgeStore;
pub use server::{ClusterLayout, ServerStore};

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector store: {0}")]
    Store(String),
    #[error("vector store task failed: {0}")]
    Task(String),
}

/// One chunk's vector with the payload the filter needs.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    pub chunk_id: String,
    pub document_id: String,
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
    /// Nearest chunks the principal may see, best first.
    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>, VectorError>;
    /// Points per (tenant, document id) (consistency checks against the catalog).
    async fn document_counts(&self) -> Result<BTreeMap<(String, String), usize>, VectorError>;
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
        "meta": p.metadata,
    });
    payload[fields::TENANT] = serde_json::json!(p.tenant);
    payload[fields::ACL_GROUPS] = serde_json::json!(p.acl.groups);
    payload[fields::ACL_USERS] = serde_json::json!(p.acl.users);
    payload
}

/// Payload fields with keyword indexes, created before any data arrives.
pub(crate) const KEYWORD_FIELDS: [&str; 4] = [
    fields::TENANT,
    fields::ACL_GROUPS,
    fields::ACL_USERS,
    "document_id",
];

#[cfg(test)]
mod contract;
