//! `POST /v1/query`: a question answered from the documents the caller may
//! read, with citations; `stream: true` sends Server-Sent Events
//! (`sources`, then `token`s, then `citations`, then `done`). An adapter of
//! `sovra_answer::Answerer`'s event stream.

use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sovra_answer::{Ask, Citation, Finished, Question, RetrievalReport, Source, Usage};
use sovra_retrieval::Mode;

use crate::answers::record::OutcomeRecorder;
use crate::answers::sampling::{self, SamplingRequest};
use crate::answers::sse::{self, StreamFormat};
use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::Problem;
use crate::routes::documents::flat_metadata;
use crate::routes::search::Filter;
use crate::routes::{question_text, top_k};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    question: String,
    #[serde(default)]
    mode: Mode,
    /// Chunks retrieved (default `answer.top_k`).
    top_k: Option<usize>,
    #[serde(default)]
    filter: Filter,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    generation: SamplingRequest,
}

/// The model's timings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timings {
    /// From admission to the first generated token (prefill included).
    pub first_token_ms: f64,
    pub total_ms: f64,
}

/// How the answer ended: the `done` event, and the tail of the body.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub model: String,
    /// `stop`, `length` or `cancelled`.
    pub finish_reason: &'static str,
    pub usage: Usage,
    /// Absent when the model was not asked (no relevant source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

impl Outcome {
    fn of(model: &str, f: &Finished) -> Self {
        Self {
            model: model.to_owned(),
            finish_reason: f.finish_reason().as_str(),
            usage: f.usage(),
            timings: f.generation.as_ref().map(|g| Timings {
                first_token_ms: g.first_token_ms,
                total_ms: g.total_ms,
            }),
        }
    }
}

/// The answer to a question (not streamed).
#[derive(Debug, Serialize)]
pub struct QueryResponse {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub sources: Vec<Source>,
    pub retrieval: Arc<RetrievalReport>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The `sources` event.
#[derive(Debug, Serialize)]
pub struct SourcesEvent<'a> {
    pub sources: &'a [Source],
    pub retrieval: &'a RetrievalReport,
}

pub async fn query(
    auth: Authorized<Read>,
    body: ValidJson<QueryBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let b = body.0;
    let question = question_text(&b.question, "question")?;
    let top_k = top_k(
        b.top_k,
        state.settings.answer.top_k,
        state.settings.search.max_top_k,
        "top_k",
    )?;
    let metadata = flat_metadata(b.filter.metadata, "filter.metadata")?;
    let params = sampling::validate(&state, b.generation, "generation.")?;
    auth.audit.detail("question", state.query_record(&question));
    auth.audit.detail("mode", json!(b.mode.as_str()));
    let ask = Ask::Documents(Question {
        text: question,
        mode: b.mode,
        top_k,
        metadata,
        app_system: None,
        history: Vec::new(),
    });
    let prepared = state.answerer.prepare(&auth.principal, ask, params).await?;
    let model = prepared.model_id().to_owned();
    let Some(retrieval) = prepared.retrieval().cloned() else {
        return Err(Problem::internal(
            "a question was prepared without retrieval",
        ));
    };
    let sources = prepared.sources().to_vec();
    let answer = crate::answers::start(&state, &auth.principal, prepared, &auth.audit).await?;
    if b.stream {
        let recorder =
            OutcomeRecorder::new(&auth.principal, &auth.audit, "/v1/query", "query.completed");
        return Ok(sse::stream(
            state.clone(),
            answer,
            recorder,
            NativeEvents { retrieval, model },
        ));
    }
    let finished = crate::answers::collect(&state, &auth.principal, answer, &auth.audit).await?;
    let outcome = Outcome::of(&model, &finished);
    Ok(HttpResponse::Ok().json(QueryResponse {
        answer: finished.text,
        citations: finished.citations,
        sources,
        retrieval,
        outcome,
    }))
}

/// Sovra's events: `sources`, `token`s, `citations`, `done` (or `error`).
struct NativeEvents {
    retrieval: Arc<RetrievalReport>,
    model: String,
}

impl StreamFormat for NativeEvents {
    fn sources(&self, sources: &[Source]) -> Bytes {
        sse::event(
            Some("sources"),
            &SourcesEvent {
                sources,
                retrieval: &self.retrieval,
            },
        )
    }

    fn text(&self, text: &str) -> Bytes {
        sse::event(Some("token"), &json!({"text": text}))
    }

    fn finish(&self, f: &Finished) -> Vec<Bytes> {
        vec![
            sse::event(Some("citations"), &json!({"citations": f.citations})),
            sse::event(Some("done"), &Outcome::of(&self.model, f)),
        ]
    }

    fn error(&self, problem: &Problem) -> Bytes {
        sse::event(
            Some("error"),
            &json!({"code": problem.code.as_str(), "detail": problem.detail}),
        )
    }
}
