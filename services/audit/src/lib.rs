//! The audit trail: one record per request, allowed or denied, in an
//! append-only, hash-chained table (PostgreSQL in production, SQLite embedded).
//!
//! * [`AuditEvent`] is what the gateway fills in while a request runs.
//! * [`AuditSink`] commits events; [`GroupCommitWriter`] batches concurrent
//!   events into one transaction and answers each caller after the commit.
//! * [`SqlStore`] holds the chain: `hash = SHA-256(prev_hash || canonical(record))`,
//!   verified by [`SqlStore::verify`], queried, exported and pruned behind
//!   signed [`checkpoint`]s.

pub mod chain;
pub mod checkpoint;
mod record;
mod store;
mod writer;

pub use checkpoint::{CheckpointKey, CheckpointKeyError, CheckpointVerifier};
pub use record::{AuditEvent, AuditRecord, EventFilter, Page};
pub use store::{PruneReport, SqlStore, VerifyReport};
pub use writer::GroupCommitWriter;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed; shared by every record of a failed group commit.
    #[error("audit database error: {0}")]
    Database(#[source] std::sync::Arc<sqlx::Error>),
    #[error("the audit writer has stopped")]
    WriterStopped,
    /// A group commit failed for a reason other than the database (logged
    /// once by the writer with its cause).
    #[error("the audit commit failed")]
    CommitFailed,
    #[error("invalid audit query: {field}: {message}")]
    InvalidQuery {
        field: &'static str,
        message: String,
    },
    #[error("corrupt audit row {seq}: {message}")]
    CorruptRow { seq: i64, message: String },
    #[error("an audit record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("checkpoint key: {0}")]
    Key(#[from] CheckpointKeyError),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Database(std::sync::Arc::new(e))
    }
}

/// Where the record was committed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReceipt {
    pub seq: i64,
    pub hash: String,
}

/// Commits audit events. The gateway sends a response only after `append`
/// has returned `Ok` (fail closed).
#[async_trait]
pub trait AuditSink: Send + Sync {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError>;
}
