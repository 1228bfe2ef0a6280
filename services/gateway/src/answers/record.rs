//! The audit notes and metrics of an answer: what was retrieved and used
//! (before generation), the outcome (after), and the separate outcome
//! record of a streamed answer, written once the response has started.

use std::time::Instant;

use serde_json::{Value, json};
use sovra_answer::{Finished, Prepared};
use sovra_audit::AuditEvent;
use sovra_auth::Principal;
use sovra_inference::{FinishReason, Generation};
use sovra_retrieval::distinct;

use crate::extract::AuditCtx;
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// Notes what was retrieved, which chunks became sources and the prompt's
/// size.
pub fn note_prepared(audit: &AuditCtx, prepared: &Prepared) {
    if let Some(r) = prepared.retrieval() {
        audit.detail(
            "retrieved_chunk_ids",
            json!(
                r.results
                    .iter()
                    .map(|h| h.chunk_id.as_str())
                    .collect::<Vec<_>>()
            ),
        );
    }
    let Some(prompt) = prepared.prompt() else {
        return;
    };
    audit.0.borrow_mut().document_ids =
        distinct(prompt.sources.iter().map(|s| s.document_id.as_str()));
    audit.detail(
        "source_chunk_ids",
        json!(
            prompt
                .sources
                .iter()
                .map(|s| s.chunk_id.as_str())
                .collect::<Vec<_>>()
        ),
    );
    audit.detail("prompt_tokens", json!(prompt.tokens));
}

/// The model failed: logged once, counted, answered without details.
pub fn generation_failed(state: &AppState, e: &sovra_inference::InferenceError) -> Problem {
    tracing::error!(error = %e, "generation failed");
    state
        .metrics
        .generations
        .with_label_values(&["error"])
        .inc();
    Problem::new(
        ErrorCode::GenerationFailed,
        "the model failed while generating",
    )
}

/// Metrics of a finished generation.
pub fn observe(state: &AppState, g: &Generation) {
    let m = &state.metrics;
    m.generation_tokens
        .with_label_values(&["prompt"])
        .inc_by(g.prompt_tokens as u64);
    m.generation_tokens
        .with_label_values(&["completion"])
        .inc_by(g.completion_tokens as u64);
    m.generation_queue_seconds.observe(g.queue_ms / 1e3);
    if g.completion_tokens > 0 {
        m.generation_first_token_seconds
            .observe(g.first_token_ms / 1e3);
        m.generation_batch_size.observe(g.mean_batch);
    }
    let decode_ms = g.total_ms - g.first_token_ms;
    if g.completion_tokens > 1 && decode_ms > 0.0 {
        m.generation_decode_tokens_per_second
            .observe((g.completion_tokens - 1) as f64 / (decode_ms / 1e3));
    }
    m.generations
        .with_label_values(&[g.finish_reason.as_str()])
        .inc();
}

/// The outcome of a generation in the request's audit record.
pub fn note_outcome(audit: &AuditCtx, g: &Generation, finished: &Finished) {
    for (k, v) in outcome_details(g, finished) {
        audit.detail(&k, v);
    }
}

fn outcome_details(g: &Generation, finished: &Finished) -> Vec<(String, Value)> {
    let mut details = vec![
        ("completion_tokens".into(), json!(g.completion_tokens)),
        ("prompt_tokens".into(), json!(g.prompt_tokens)),
        ("finish_reason".into(), json!(g.finish_reason.as_str())),
        (
            "cited_chunk_ids".into(),
            json!(
                finished
                    .citations
                    .iter()
                    .map(|c| c.chunk_id.as_str())
                    .collect::<Vec<_>>()
            ),
        ),
    ];
    if let Some(confirmed) = finished.confirmed {
        details.push(("confirmed".into(), json!(confirmed)));
    }
    if let Some(margin) = finished.reported_check_margin() {
        details.push(("check_margin".into(), json!(margin)));
    }
    details
}

/// Who asked, for the record of a streamed answer's outcome (written after
/// the response has started, so outside the request pipeline).
#[derive(Clone)]
pub struct OutcomeRecorder {
    request_id: String,
    trace_id: String,
    client_addr: Option<String>,
    subject: String,
    tenant: String,
    roles: Vec<String>,
    route: &'static str,
    action: &'static str,
    started: Instant,
    base_details: serde_json::Map<String, Value>,
}

impl OutcomeRecorder {
    pub fn new(
        principal: &Principal,
        audit: &AuditCtx,
        route: &'static str,
        action: &'static str,
    ) -> Self {
        let notes = audit.0.borrow();
        let mut base_details = serde_json::Map::new();
        for key in ["question", "model", "mode", "retrieval"] {
            if let Some(v) = notes.details.get(key) {
                base_details.insert(key.to_owned(), v.clone());
            }
        }
        Self {
            request_id: notes.request_id.clone(),
            trace_id: notes.trace_id.clone(),
            client_addr: notes.client_addr.clone(),
            subject: principal.subject.clone(),
            tenant: principal.tenant.clone(),
            roles: principal
                .role_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            route,
            action,
            started: Instant::now(),
            base_details,
        }
    }

    /// Appends the outcome record: tokens, finish reason, cited chunks, the
    /// answer's check.
    /// Returns whether it was committed.
    pub async fn record(
        &self,
        state: &AppState,
        outcome: Result<(&Generation, &Finished), &str>,
    ) -> bool {
        let mut event = AuditEvent::new(&self.request_id, "POST", self.route);
        event.trace_id = self.trace_id.clone();
        event.client_addr = self.client_addr.clone();
        event.subject = Some(self.subject.clone());
        event.tenant = Some(self.tenant.clone());
        event.roles = self.roles.clone();
        event.action = self.action.to_owned();
        event.latency_us = i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX);
        let mut details = self.base_details.clone();
        match outcome {
            Ok((g, finished)) => {
                crate::quota::charge_tokens(
                    state,
                    &self.tenant,
                    &self.subject,
                    g.completion_tokens,
                )
                .await;
                event.status = 200;
                event.document_ids =
                    distinct(finished.citations.iter().map(|c| c.document_id.as_str()));
                for (k, v) in outcome_details(g, finished) {
                    details.insert(k, v);
                }
                if g.finish_reason == FinishReason::Cancelled {
                    event.reason = Some("client_disconnected".into());
                }
            }
            Err(reason) => {
                event.status = 500;
                event.reason = Some(reason.to_owned());
            }
        }
        event.details = Value::Object(details);
        match state.audit.append(event).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, request_id = %self.request_id, "the outcome of a streamed answer was not recorded");
                false
            }
        }
    }
}
