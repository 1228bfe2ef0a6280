//! A bounded, fair queue in front of a [`Generator`]: at most `slots`
//! generations run at once (the batch the generator decodes together), at
//! most `capacity` more wait; past that the caller is told to come back
//! later. One tenant may hold at most its share of the waiting places, and
//! a freed slot goes to the waiting tenant with the fewest generations
//! running (oldest first among equals), so one busy tenant cannot starve
//! the others. Each generation streams its text through a channel; when
//! the receiver is dropped (the client went away) the generation stops at
//! its next step, or leaves the queue if it had not started.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

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

/// Who waits and who runs.
#[derive(Default)]
struct Dispatch {
    running_by_tenant: HashMap<String, usize>,
    /// Per tenant, its waiting generations in arrival order.
    waiting: HashMap<String, VecDeque<Ticket>>,
    next_ticket: u64,
}

struct Ticket {
    id: u64,
    go: oneshot::Sender<()>,
}

impl Dispatch {
    fn waiting_count(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    fn running(&self) -> usize {
        self.running_by_tenant.values().sum()
    }

    /// Starts waiting generations while slots are free: each time the
    /// tenant with the fewest running, the oldest ticket among equals.
    fn fill(&mut self, slots: usize) {
        while self.running() < slots {
            let next = self
                .waiting
                .iter()
                .filter_map(|(tenant, q)| {
                    q.front().map(|t| {
                        let running = self.running_by_tenant.get(tenant).copied().unwrap_or(0);
                        (running, t.id, tenant.clone())
                    })
                })
                .min();
            let Some((_, _, tenant)) = next else {
                return;
            };
            let Some(ticket) = self.waiting.get_mut(&tenant).and_then(VecDeque::pop_front) else {
                return;
            };
            if self.waiting.get(&tenant).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&tenant);
            }
            // Counted as running even if its task is just leaving: the
            // task's `Place` settles it (withdrawing finds no ticket).
            let _ = ticket.go.send(());
            *self.running_by_tenant.entry(tenant).or_insert(0) += 1;
        }
    }

    fn finish(&mut self, tenant: &str, slots: usize) {
        if let Some(n) = self.running_by_tenant.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.running_by_tenant.remove(tenant);
            }
        }
        self.fill(slots);
    }

    /// Removes a ticket that never started (its caller left).
    fn withdraw(&mut self, tenant: &str, id: u64) -> bool {
        let Some(q) = self.waiting.get_mut(tenant) else {
            return false;
        };
        let before = q.len();
        q.retain(|t| t.id != id);
        let removed = q.len() < before;
        if q.is_empty() {
            self.waiting.remove(tenant);
        }
        removed
    }
}

pub struct GenerationQueue {
    generator: Arc<dyn Generator>,
    dispatch: Arc<Mutex<Dispatch>>,
    slots: usize,
    capacity: usize,
    /// Most waiting places one tenant may hold.
    tenant_cap: usize,
}

/// Settles a generation's place however its task ends.
struct Place {
    dispatch: Arc<Mutex<Dispatch>>,
    tenant: String,
    slots: usize,
    started: bool,
    ticket: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut d) = self.dispatch.lock() {
            if self.started {
                d.finish(&self.tenant, self.slots);
            } else if !d.withdraw(&self.tenant, self.ticket) {
                // Dispatched while its caller was leaving: it holds a slot.
                d.finish(&self.tenant, self.slots);
            }
        }
    }
}

impl GenerationQueue {
    /// `slots` generations at once, `capacity` more waiting, one tenant at
    /// most `tenant_share` of the waiting places (at least one).
    pub fn new(
        generator: Arc<dyn Generator>,
        slots: usize,
        capacity: usize,
        tenant_share: f64,
    ) -> Self {
        let share = if tenant_share > 0.0 && tenant_share <= 1.0 {
            tenant_share
        } else {
            1.0
        };
        Self {
            generator,
            dispatch: Arc::new(Mutex::new(Dispatch::default())),
            slots: slots.max(1),
            capacity,
            tenant_cap: ((capacity as f64 * share).floor() as usize).max(1),
        }
    }

    pub fn generator(&self) -> &Arc<dyn Generator> {
        &self.generator
    }

    /// Generations running or waiting now.
    pub fn admitted(&self) -> usize {
        self.dispatch
            .lock()
            .map(|d| d.running() + d.waiting_count())
            .unwrap_or(0)
    }

    /// Admits a generation for `tenant`, or refuses it at once when the
    /// queue, or the tenant's share of it, is full. Must be called within a
    /// Tokio runtime.
    pub fn submit(
        &self,
        tenant: &str,
        prompt: String,
        params: SamplingParams,
    ) -> Result<GenerationHandle, QueueFull> {
        self.admit(tenant, prompt, params, false)
    }

    /// Admits a generation that continues one this tenant was already
    /// admitted for (the check of a finished answer): it is not refused
    /// when the queue is full, and it waits at the front of its tenant's
    /// line, so a request admitted once is not turned away halfway.
    pub fn submit_follow_up(
        &self,
        tenant: &str,
        prompt: String,
        params: SamplingParams,
    ) -> Result<GenerationHandle, QueueFull> {
        self.admit(tenant, prompt, params, true)
    }

    fn admit(
        &self,
        tenant: &str,
        prompt: String,
        params: SamplingParams,
        follow_up: bool,
    ) -> Result<GenerationHandle, QueueFull> {
        let submitted = Instant::now();
        let (go_tx, go_rx) = oneshot::channel();
        let ticket = {
            let mut d = self.dispatch.lock().map_err(|_| QueueFull { waiting: 0 })?;
            let tenant_waiting = d.waiting.get(tenant).map_or(0, VecDeque::len);
            let waiting = d.waiting_count();
            let running = d.running();
            let full = running + waiting >= self.slots + self.capacity;
            let tenant_full = running >= self.slots && tenant_waiting >= self.tenant_cap;
            if (full || tenant_full) && !follow_up {
                return Err(QueueFull { waiting });
            }
            d.next_ticket += 1;
            let id = d.next_ticket;
            let line = d.waiting.entry(tenant.to_owned()).or_default();
            if follow_up {
                line.push_front(Ticket { id, go: go_tx });
            } else {
                line.push_back(Ticket { id, go: go_tx });
            }
            d.fill(self.slots);
            id
        };
        tracing::debug!(tenant, ticket, "generation admitted");
        let mut place = Place {
            dispatch: Arc::clone(&self.dispatch),
            tenant: tenant.to_owned(),
            slots: self.slots,
            started: false,
            ticket,
        };
        let (tx, rx) = mpsc::channel(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let generator = self.generator.clone();
        let span = tracing::Span::current();
        tokio::spawn(async move {
            tokio::select! {
                go = go_rx => {
                    if go.is_err() {
                        return;
                    }
                    place.started = true;
                }
                _ = tx.closed() => return, // the caller left while waiting
            }
            let _place = place;
            let queue_ms = submitted.elapsed().as_secs_f64() * 1e3;
            if cancelled.load(Ordering::SeqCst) || tx.send(GenerationEvent::Started).await.is_err()
            {
                return;
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
                Ok(Ok(mut g)) => {
                    g.queue_ms = queue_ms;
                    GenerationEvent::Done(g)
                }
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
