//! `POST /v1/query`: a question answered from the documents the caller may
//! read, with citations; `stream: true` sends Server-Sent Events
//! (`sources`, then `token`s, then `citations`, then `done`).

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use sovra_answer::Citation;
use sovra_inference::Generation;
use sovra_retrieval::Mode;
use tokio::sync::mpsc;

use crate::answering::{self, OutcomeRecorder, Question, Retrieval, SamplingRequest};
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
    let params = answering::sampling(&state, b.generation, "generation.")?;
    auth.audit.detail("question", state.query_record(&question));
    auth.audit.detail("mode", json!(b.mode.as_str()));
    let retrieval = answering::retrieve(
        &state,
        &auth.principal,
        Question {
            text: &question,
            mode: b.mode,
            top_k,
            metadata: &metadata,
            app_system: None,
            history: Vec::new(),
        },
        params.max_tokens,
        &auth.audit,
    )
    .await?;
    let model = state.generation.generator().model_id().to_owned();

    let Some(prompt) = &retrieval.prompt else {
        auth.audit.detail("finish_reason", json!("no_sources"));
        let done =
            json!({"model": model, "finish_reason": "stop", "usage": answering::usage(None)});
        if b.stream {
            let (tx, rx) = mpsc::channel(4);
            for ev in [
                answering::sse(
                    Some("sources"),
                    &json!({"sources": [], "retrieval": retrieval.details()}),
                ),
                answering::sse(Some("token"), &json!({"text": retrieval.refusal()})),
                answering::sse(Some("citations"), &json!({"citations": []})),
                answering::sse(Some("done"), &done),
            ] {
                let _ = tx.try_send(ev);
            }
            return Ok(answering::sse_response(rx));
        }
        return Ok(HttpResponse::Ok().json(json!({
            "answer": retrieval.refusal(),
            "citations": [],
            "sources": [],
            "retrieval": retrieval.details(),
            "model": model,
            "finish_reason": "stop",
            "usage": answering::usage(None),
        })));
    };

    crate::quota::check_tokens(&state, &auth.principal).await?;
    let handle = answering::submit(&state, prompt, params, &auth.audit)?;
    if b.stream {
        let recorder =
            OutcomeRecorder::new(&auth.principal, &auth.audit, "/v1/query", "query.completed");
        return Ok(answering::stream(
            state.clone(),
            handle,
            recorder,
            NativeEvents { retrieval, model },
        ));
    }
    let g = answering::collect(&state, handle).await?;
    let who = &auth.principal;
    crate::quota::charge_tokens(&state, &who.tenant, &who.subject, g.completion_tokens).await;
    let settled = retrieval.settle(&g.text);
    answering::note_outcome(&auth.audit, &g, &settled.citations);
    Ok(HttpResponse::Ok().json(json!({
        "answer": settled.text,
        "citations": settled.citations,
        "sources": retrieval.sources(),
        "retrieval": retrieval.details(),
        "model": model,
        "finish_reason": g.finish_reason.as_str(),
        "usage": answering::usage(Some(&g)),
        "timings": {"first_token_ms": g.first_token_ms, "total_ms": g.total_ms},
    })))
}

/// Sovra's events: `sources`, `token`s, `citations`, `done` (or `error`).
struct NativeEvents {
    retrieval: Retrieval,
    model: String,
}

impl answering::StreamFormat for NativeEvents {
    fn start(&self) -> Bytes {
        answering::sse(
            Some("sources"),
            &json!({"sources": self.retrieval.sources(), "retrieval": self.retrieval.details()}),
        )
    }

    fn text(&self, text: &str) -> Bytes {
        answering::sse(Some("token"), &json!({"text": text}))
    }

    fn finish(&self, g: &Generation, citations: &[Citation]) -> Vec<Bytes> {
        vec![
            answering::sse(Some("citations"), &json!({"citations": citations})),
            answering::sse(
                Some("done"),
                &json!({
                    "model": self.model,
                    "finish_reason": g.finish_reason.as_str(),
                    "usage": answering::usage(Some(g)),
                    "timings": {"first_token_ms": g.first_token_ms, "total_ms": g.total_ms},
                }),
            ),
        ]
    }

    fn error(&self, problem: &Problem) -> Bytes {
        answering::sse(
            Some("error"),
            &json!({"code": problem.code.as_str(), "detail": problem.detail}),
        )
    }

    fn citations(&self, text: &str) -> Vec<Citation> {
        self.retrieval.citations(text)
    }
}
