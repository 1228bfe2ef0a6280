//! How the answer routes (`/v1/query`, `/v1/chat/completions`) adapt
//! `sovra-answer`'s pipeline to HTTP. The pipeline itself (retrieve, gate,
//! prompt, generate, cite) is `sovra_answer::Answerer`; here are only the
//! parts that belong to a web gateway: checking a request's sampling
//! settings ([`sampling`]), admitting a generation or answering 429, the
//! audit notes and metrics of an answer ([`record`]), and writing its event
//! stream as Server-Sent Events ([`sse`]).

pub mod record;
pub mod sampling;
pub mod sse;

use actix_web::http::header::{self, HeaderValue};
use serde_json::json;
use sovra_answer::{AnswerError, AnswerStream, Prepared};
use sovra_auth::Principal;
use sovra_config::Settings;

use crate::extract::AuditCtx;
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// The relevance gate as configured (`answer.*`, the dense bar and
/// languages by embedding model): what the answer routes apply, and what
/// `sovra eval --answers` replays a run with.
pub fn gate(settings: &Settings) -> sovra_answer::Gate {
    sovra_answer::Gate {
        min_question_coverage: settings.answer.min_question_coverage,
        min_dense_score: settings.min_dense_score(),
        dense_languages: settings.dense_gate_languages(),
        min_context_coverage: settings.answer.min_context_coverage,
    }
}

/// Notes what was retrieved and put into the prompt, checks the caller's
/// token quota when the model will run, and admits the generation (429 with
/// `Retry-After` when the queue is full).
pub async fn start(
    state: &AppState,
    principal: &Principal,
    prepared: Prepared,
    audit: &AuditCtx,
) -> Result<AnswerStream, Problem> {
    record::note_prepared(audit, &prepared);
    if prepared.uses_model() {
        crate::quota::check_tokens(state, principal).await?;
        audit.detail("model", json!(prepared.model_id()));
    } else if prepared.retrieval().is_some() {
        audit.detail("finish_reason", json!("no_sources"));
    }
    prepared.start().map_err(|e| match e {
        AnswerError::Busy { waiting } => {
            state
                .metrics
                .generations
                .with_label_values(&["queue_full"])
                .inc();
            audit.detail("finish_reason", json!("queue_full"));
            let retry = state.settings.generator.retry_after_secs.to_string();
            let mut p = Problem::new(
                ErrorCode::Overloaded,
                format!("the model is busy ({waiting} requests waiting); try again shortly"),
            )
            .reason("queue_full");
            if let Ok(v) = HeaderValue::from_str(&retry) {
                p = p.header(header::RETRY_AFTER, v);
            }
            p
        }
        other => other.into(),
    })
}

/// Waits for a whole answer (not streamed), then records its outcome:
/// metrics, the tokens charged to the caller's quota, the audit notes.
pub async fn collect(
    state: &AppState,
    principal: &Principal,
    stream: AnswerStream,
    audit: &AuditCtx,
) -> Result<sovra_answer::Finished, Problem> {
    let finished = match stream.collect().await {
        Ok(f) => f,
        Err(AnswerError::Model(e)) => return Err(record::generation_failed(state, &e)),
        Err(other) => return Err(other.into()),
    };
    if let Some(g) = &finished.generation {
        record::observe(state, g);
        crate::quota::charge_tokens(
            state,
            &principal.tenant,
            &principal.subject,
            g.completion_tokens,
        )
        .await;
        record::note_outcome(audit, g, &finished);
    }
    Ok(finished)
}
