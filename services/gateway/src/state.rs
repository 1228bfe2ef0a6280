use std::sync::Arc;

use sha2::{Digest, Sha256};
use sovra_audit::{AuditSink, CheckpointKey, CheckpointVerifier, SqlStore};
use sovra_auth::Authenticator;
use sovra_config::{QueryPolicy, Settings};
use sovra_documents::DocumentService;
use sovra_telemetry::Metrics;

/// What every handler shares; built once at start-up.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Authenticator,
    pub audit: Arc<dyn AuditSink>,
    pub store: SqlStore,
    /// The catalog-and-audit database (readiness).
    pub database: sovra_storage::Database,
    pub metrics: Metrics,
    /// Signs retention checkpoints; `None` where no key is configured.
    pub checkpoint_key: Option<Arc<CheckpointKey>>,
    pub checkpoint_verifier: Option<CheckpointVerifier>,
    /// Quotas per subject and tenant (memory or Redis).
    pub limits: Arc<dyn sovra_limits::LimitStore>,
    /// Failed authentications per client, limited before the audit write.
    pub denials: Arc<crate::denials::DenialLimiter>,
    pub documents: Arc<DocumentService>,
    pub retriever: Arc<sovra_retrieval::Retriever>,
    /// The answer pipeline: retrieval, relevance gate, prompt, model, citations.
    pub answerer: sovra_answer::Answerer,
}

impl AppState {
    /// A message's digest for the audit record: SHA-256 of `audit.query_salt`
    /// (empty under the plain policy) and the text, so an auditor holding a
    /// transcript can match it, and nothing more is kept.
    pub fn message_digest(&self, text: &str) -> String {
        let mut h = Sha256::new();
        if self.settings.audit.query_policy == QueryPolicy::Hash {
            h.update(self.settings.audit.query_salt.as_bytes());
        }
        h.update(text.as_bytes());
        hex::encode(h.finalize())
    }

    /// What the audit record keeps of a query, by `audit.query_policy`.
    pub fn query_record(&self, query: &str) -> serde_json::Value {
        match self.settings.audit.query_policy {
            QueryPolicy::Plain => serde_json::json!({"text": query}),
            QueryPolicy::Hash => {
                let mut h = Sha256::new();
                h.update(self.settings.audit.query_salt.as_bytes());
                h.update(query.as_bytes());
                serde_json::json!({"sha256": hex::encode(h.finalize())})
            }
        }
    }
}
