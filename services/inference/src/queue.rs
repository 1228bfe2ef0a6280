//! A bounded queue in front of a [`Generator`]: at most `workers`
//! generations run at once, at most `capacity` more wait; past that the
//! caller is told to come back later. Each generation streams its text
//! through a channel; when the receiver is dropped (the client went away)
//! the generation stops at its next step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc};

use crate::InferenceError;
use crate::generate::{Generation, Generator, SamplingParams};

/// What a queued generation sends.
#[derive(Debug)]
pub enum GenerationEvent {
    /// It left the queue and started.
    Started,
    /// A new piece of text.
    Text(String),
    Done(Generation),
    Failed(InferenceError),
}

#[derive(Debug, thiserror::Error)]
#[error("the generation queue is full ({waiting} waiting)")]
pub struct QueueFull {
    pub waiting: usize,
}

pub struct GenerationQueue {
    generator: Arc<dyn Generator>,
    workers: Arc<Semaphore>,
    worker_count: usize,
    capacity: usize,
    /// Generations admitted and not finished (running + waiting).
    admitted: Arc<AtomicUsize>,
}

/// Decrements the admitted count when a generation is over, however it ends.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GenerationQueue {
    pub fn new(generator: Arc<dyn Generator>, workers: usize, capacity: usize) -> Self {
        let workers = workers.max(1);
        Self {
            generator,
            workers: Arc::new(Semaphore::new(workers)),
            worker_count: workers,
            capacity,
            admitted: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn generator(&self) -> &Arc<dyn Generator> {
        &self.generator
    }

    /// Generations running or waiting now.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Admits a generation, or refuses it at once when the queue is full.
    /// Must be called within a Tokio runtime.
    pub fn submit(
        &self,
        prompt: String,
        params: SamplingParams,
    ) -> Result<GenerationHandle, QueueFull> {
        let limit = self.worker_count + self.capacity;
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|n| QueueFull {
                waiting: n.saturating_sub(self.worker_count),
            })?;
        tracing::debug!(admitted = admitted + 1, "generation admitted");
        let admission = Admission(self.admitted.clone());
        let (tx, rx) = mpsc::channel(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let workers = self.workers.clone();
        let generator = self.generator.clone();
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let _admission = admission;
            let Ok(_permit) = workers.acquire_owned().await else {
                return;
            };
            if cancelled.load(Ordering::SeqCst) || tx.send(GenerationEvent::Started).await.is_err()
            {
                return; // the caller left while waiting
            }
            let text_tx = tx.clone();
            let result = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                generator.generate(&prompt, &params, &mut |piece: &str| {
                    if cancelled.load(Ordering::SeqCst) || text_tx.is_closed() {
                        return false;
                    }
                    if piece.is_empty() {
                        return true;
                    }
                    text_tx
                        .blocking_send(GenerationEvent::Text(piece.to_owned()))
                        .is_ok()
                })
            })
            .await;
            let event = match result {
                Ok(Ok(g)) => GenerationEvent::Done(g),
                Ok(Err(e)) => GenerationEvent::Failed(e),
                Err(e) => GenerationEvent::Failed(InferenceError::Runtime(format!(
                    "generation task failed: {e}"
                ))),
            };
            let _ = tx.send(event).await;
        });
        Ok(GenerationHandle { events: rx, cancel })
    }
}

/// A generation admitted to the queue: its events, and a way to stop it.
/// Dropping the handle cancels the generation too.
#[derive(Debug)]
pub struct GenerationHandle {
    events: mpsc::Receiver<GenerationEvent>,
    cancel: Arc<AtomicBool>,
}

impl GenerationHandle {
    pub async fn recv(&mut self) -> Option<GenerationEvent> {
        self.events.recv().await
    }

    /// Stops the generation at its next step; its `Done` event (with the
    /// finish reason `cancelled` and the tokens so far) still arrives.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

impl Drop for GenerationHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}
