//! Group commit: requests hand their events to one writer task, which
//! commits whatever has queued up in one transaction and then answers every
//! caller. One writer per process keeps the chain a single line; across
//! processes the store's lock does (see `SqlStore::append_batch`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::{AuditError, AuditEvent, AuditReceipt, AuditSink, SqlStore};

type Reply = oneshot::Sender<Result<AuditReceipt, AuditError>>;

/// Observes each commit: (records in the batch, seconds taken, succeeded).
pub type CommitObserver = Arc<dyn Fn(usize, f64, bool) + Send + Sync>;

/// An [`AuditSink`] that batches concurrent appends into one transaction.
#[derive(Clone)]
pub struct GroupCommitWriter {
    tx: mpsc::Sender<(AuditEvent, Reply)>,
}

impl GroupCommitWriter {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(
        store: SqlStore,
        batch_max: usize,
        queue_capacity: usize,
        observer: Option<CommitObserver>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        tokio::spawn(run(store, rx, batch_max.max(1), observer));
        Self { tx }
    }
}

async fn run(
    store: SqlStore,
    mut rx: mpsc::Receiver<(AuditEvent, Reply)>,
    batch_max: usize,
    observer: Option<CommitObserver>,
) {
    let mut events = Vec::with_capacity(batch_max);
    let mut replies = Vec::with_capacity(batch_max);
    while let Some((event, reply)) = rx.recv().await {
        events.push(event);
        replies.push(reply);
        while events.len() < batch_max {
            match rx.try_recv() {
                Ok((event, reply)) => {
                    events.push(event);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = store.append_batch(&events).await;
        if let Some(observe) = &observer {
            observe(
                events.len(),
                started.elapsed().as_secs_f64(),
                result.is_ok(),
            );
        }
        match result {
            Ok(receipts) => {
                for (reply, receipt) in replies.drain(..).zip(receipts) {
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = events.len(), "audit commit failed");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(match &e {
                        AuditError::Database(cause) => AuditError::Database(cause.clone()),
                        _ => AuditError::CommitFailed,
                    }));
                }
            }
        }
        events.clear();
    }
}

#[async_trait]
impl AuditSink for GroupCommitWriter {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        rx.await.map_err(|_| AuditError::WriterStopped)?
    }
}
