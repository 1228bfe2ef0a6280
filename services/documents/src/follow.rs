//! Following the catalog's change sequence.
//!
//! Every catalog write appends a change (tenant, document, version) in its
//! own transaction. Each replica applies the changes it did not write itself
//! to its own indexes, in sequence order: the lexical index always, the
//! vectors too when they are local (qdrant-edge; a Qdrant server is shared
//! and already holds them). It wakes on a notification (PostgreSQL
//! `LISTEN`, wired by the caller) or after `poll` at the latest, and keeps
//! the last applied sequence number in a file, so a restart resumes where it
//! stopped. A change is applied by reading the catalog's current version of
//! its document, so replaying one twice, or out of date, is harmless.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::{DocumentService, ServiceError};

/// What the follower reports after each applied batch.
pub type FollowObserver = Arc<dyn Fn(FollowProgress) + Send + Sync>;

/// Progress of one applied batch, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowProgress {
    /// The last sequence number applied.
    pub applied_seq: i64,
    /// Changes in the batch, and how many were this replica's own.
    pub changes: usize,
    pub own: usize,
    /// Seconds from the newest applied change's commit to its application.
    pub lag_seconds: f64,
}

pub struct FollowerOptions {
    /// Where the last applied sequence number is kept.
    pub state_file: PathBuf,
    /// The longest wait for a change without a notification.
    pub poll: Duration,
    /// Whether this replica's vectors are its own (qdrant-edge) and must
    /// follow too.
    pub local_vectors: bool,
    pub observer: Option<FollowObserver>,
}

pub struct Follower {
    service: Arc<DocumentService>,
    options: FollowerOptions,
    wake: Arc<Notify>,
}

/// Changes read per round.
const BATCH: i64 = 256;

impl Follower {
    pub fn new(service: Arc<DocumentService>, options: FollowerOptions) -> Self {
        Self {
            service,
            options,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notified when a change may be waiting (e.g. on a PostgreSQL
    /// notification); polling covers a missed one.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The last applied sequence number from the state file; `None` for a
    /// replica that never followed.
    pub fn saved_seq(&self) -> Option<i64> {
        std::fs::read_to_string(&self.options.state_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    fn save_seq(&self, seq: i64) -> std::io::Result<()> {
        let path = &self.options.state_file;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, seq.to_string())?;
        std::fs::rename(&tmp, path)
    }

    /// Applies every change after `from` that is waiting now; returns the
    /// last sequence number applied.
    pub async fn catch_up(&self, mut from: i64) -> Result<i64, ServiceError> {
        loop {
            let changes = self.service.catalog().changes_after(from, BATCH).await?;
            let Some(last) = changes.last() else {
                return Ok(from);
            };
            let (last_seq, last_ts) = (last.seq, last.ts_us);
            // One sync per document, for its newest change in the batch.
            let mut todo: BTreeMap<(String, String), i64> = BTreeMap::new();
            let mut own = 0;
            for c in &changes {
                if self.service.take_own(c.seq) {
                    own += 1;
                    continue;
                }
                todo.insert((c.tenant.clone(), c.document_id.clone()), c.seq);
            }
            for (tenant, id) in todo.keys() {
                self.service
                    .sync_document(tenant, id, self.options.local_vectors)
                    .await?;
            }
            if let Err(e) = self.save_seq(last_seq) {
                tracing::warn!(error = %e, file = %self.options.state_file.display(), "could not save the applied change sequence; a restart replays from the last saved one");
            }
            let now_us = crate::chrono_now_us();
            let progress = FollowProgress {
                applied_seq: last_seq,
                changes: changes.len(),
                own,
                lag_seconds: (now_us - last_ts).max(0) as f64 / 1e6,
            };
            if progress.changes > progress.own {
                tracing::info!(
                    applied_seq = last_seq,
                    changes = progress.changes,
                    own,
                    lag_seconds = progress.lag_seconds,
                    "applied catalog changes"
                );
            }
            if let Some(observe) = &self.options.observer {
                observe(progress);
            }
            from = last_seq;
        }
    }

    /// Follows the change sequence from `from` for as long as it runs.
    pub async fn run(self, mut from: i64) {
        loop {
            match self.catch_up(from).await {
                Ok(seq) => from = seq,
                Err(e) => tracing::error!(error = %e, "applying catalog changes failed; retrying"),
            }
            let _ = tokio::time::timeout(self.options.poll, self.wake.notified()).await;
        }
    }
}
