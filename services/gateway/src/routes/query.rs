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
use crate::problem::ProblemBody;
use crate::routes::documents::flat_metadata;
use crate::routes::search::Filter;
use crate::routes::{question_text, top_k};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Timings {
    /// From admission to the first generated token (prefill included).
    pub first_token_ms: f64,
    pub total_ms: f64,
}

/// How the answer ended: the `done` event, and the tail of the body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub model: String,
    /// `stop`, `length` or `cancelled`.
    pub finish_reason: &'static str,
    pub usage: Usage,
    /// Absent when the model was not asked (no relevant source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// The answer's check (answer.verify): true when the model confirmed
    /// that the passages the answer cites state it, false when it did not
    /// and the answer is the refusal; absent when no check ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
    /// The check's margin: ln(p(yes) / p(no)) of the first token of the
    /// model's reply; the check confirms when it exceeds
    /// answer.verify_min_margin. Absent when no check ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_margin: Option<f32>,
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
            confirmed: f.confirmed,
            check_margin: f.reported_check_margin(),
        }
    }
}

/// The answer to a question (not streamed).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub sources: Arc<[Source]>,
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

#[utoipa::path(
    post,
    path = "/v1/query",
    tag = "answers",
    operation_id = "answers.query",
    summary = "Answer a question from the documents the caller may read, with citations",
    description = r#"Role reader. The question goes through hybrid (or the given mode) retrieval with the caller's tenant and ACL inside both indexes; hits that pass the relevance gate (at least answer.min_question_coverage of the question's topic words, or a dense score of at least answer.min_dense_score for questions in answer.dense_gate_languages) become numbered sources in the prompt (once one hit passes, so do the others holding at least answer.min_context_coverage of the topic words), cut to answer.max_source_tokens each and dropped from the lowest rank until prompt plus max_tokens fit generator.context_tokens. The model is told to answer only from them, in the question's language (English, Indonesian or Chinese); it writes no source markers, and the citations returned are the sources each sentence of the answer is attributed to. When no source is relevant the answer is the refusal in the question's language ("I could not find this in the documents available to you.", "Saya tidak menemukan jawabannya dalam dokumen yang tersedia untuk Anda.", "在您可以查阅的文档中找不到答案。") without running the model; an unstreamed answer in which the model says the documents do not hold the answer, or (answer.refuse_unsupported) none of whose sentences a source supports, is returned as that same sentence. With answer.verify on, an answer that cites sources is then checked: the model is asked whether the passages it cites state it, and unless the log-odds of a yes over a no as its reply's first token (`check_margin`) exceed answer.verify_min_margin the answer is that same sentence without citations; `confirmed` (true or false; absent when no check ran) tells how the check went. With `stream: true` the response is `text/event-stream`: one `sources` event (`{sources, retrieval}`), `token` events (`{text}`), one `citations` event (`{citations}`), then `done` (`{model, finish_reason, usage, timings, confirmed, check_margin}`; a streamed answer the check refuses keeps the words already sent and cites nothing); an `error` event (`{code, detail}`) if the model fails. A streamed answer leaves two audit records with the same request id: `query` (question or its hash, retrieved/source chunk ids, model, prompt tokens; committed before the first byte) and `query.completed` (completion tokens, finish reason, cited chunk ids; `reason` = `client_disconnected` when the client left, which cancels the generation). 429 with Retry-After when generator.workers are busy and generator.queue_capacity requests already wait."#,
    request_body = QueryBody,
    responses(
        (status = 200, description = "the answer (or, with stream, Server-Sent Events)", content((QueryResponse = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "unsupported media type", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "the model is busy or a quota is spent (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 500, description = "the model failed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
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
    let answer = crate::answers::start(&state, &auth.principal, prepared, &auth.audit).await?;
    let sources = answer.sources().clone();
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
