//! What `/v1/query` and `/v1/chat/completions` share: sampling parameters
//! from a request, retrieval into a prompt, admission to the generation
//! queue (429 when full), collecting or streaming the generation, and the
//! audit record of a streamed answer's outcome.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_answer::{Budget, Prompt, RetrievalRequest};
use sovra_audit::AuditEvent;
use sovra_auth::Principal;
use sovra_inference::{
    ChatMessage, FinishReason, Generation, GenerationEvent, GenerationHandle, SamplingParams,
};
use sovra_retrieval::{Mode, Retrieved};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::extract::AuditCtx;
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// Generation settings a request may carry (OpenAI's names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingRequest {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub repetition_penalty: Option<f32>,
    pub stop: Option<Stop>,
    /// Token id (as a string) to a bias in [-100, 100].
    #[serde(default)]
    pub logit_bias: BTreeMap<String, f32>,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Validates `k` against the configured limits; `prefix` is prepended to
/// the field named in an error (`generation.` for `/v1/query`).
pub fn sampling(
    state: &AppState,
    k: SamplingRequest,
    prefix: &str,
) -> Result<SamplingParams, Problem> {
    let g = &state.settings.generator;
    let field = |name: &str| format!("{prefix}{name}");
    let max_tokens = k.max_tokens.unwrap_or(g.default_max_tokens);
    if max_tokens == 0 || max_tokens > g.max_tokens_limit {
        return Err(Problem::invalid_parameter(
            &field("max_tokens"),
            format!("must be between 1 and {}", g.max_tokens_limit),
        ));
    }
    let temperature = k.temperature.unwrap_or(g.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(Problem::invalid_parameter(
            &field("temperature"),
            "must be between 0 and 2",
        ));
    }
    let top_p = k.top_p.unwrap_or(g.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Problem::invalid_parameter(
            &field("top_p"),
            "must be in (0, 1]",
        ));
    }
    let vocab = state.generation.generator().vocab_size();
    let top_k = k.top_k.unwrap_or(g.top_k);
    if top_k > vocab {
        return Err(Problem::invalid_parameter(
            &field("top_k"),
            format!("must be at most {vocab}"),
        ));
    }
    let repetition_penalty = k.repetition_penalty.unwrap_or(g.repetition_penalty);
    if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
        return Err(Problem::invalid_parameter(
            &field("repetition_penalty"),
            "must be in (0, 10]",
        ));
    }
    let stop = match k.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.chars().count() > 64) {
        return Err(Problem::invalid_parameter(
            &field("stop"),
            "at most 4 sequences of 1 to 64 characters",
        ));
    }
    let mut logit_bias = Vec::with_capacity(k.logit_bias.len());
    if k.logit_bias.len() > 300 {
        return Err(Problem::invalid_parameter(
            &field("logit_bias"),
            "at most 300 tokens",
        ));
    }
    for (token, bias) in k.logit_bias {
        let id = token
            .parse::<u32>()
            .ok()
            .filter(|&t| (t as usize) < vocab)
            .ok_or_else(|| {
                Problem::invalid_parameter(
                    &field("logit_bias"),
                    format!("keys must be token ids below {vocab}"),
                )
            })?;
        if !(-100.0..=100.0).contains(&bias) {
            return Err(Problem::invalid_parameter(
                &field("logit_bias"),
                "biases must be between -100 and 100",
            ));
        }
        logit_bias.push((id, bias));
    }
    Ok(SamplingParams {
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed: k.seed,
        repetition_penalty,
        stop,
        logit_bias,
    })
}

/// The retrieval half of an answer.
pub struct Retrieval {
    /// The question, for attributing the answer to its sources.
    pub question: String,
    pub mode: Mode,
    pub hits: Vec<Retrieved>,
    /// None when no hit was relevant: the answer says so without the model.
    pub prompt: Option<Prompt>,
    pub relevant: usize,
}

impl Retrieval {
    /// The retrieval details a response carries.
    pub fn details(&self) -> Value {
        json!({
            "mode": self.mode.as_str(),
            "retrieved": self.hits.len(),
            "relevant": self.relevant,
            "used": self.prompt.as_ref().map(|p| p.sources.len()).unwrap_or(0),
            "dropped": self.prompt.as_ref().map(|p| p.dropped).unwrap_or(0),
            "results": self.hits,
        })
    }

    pub fn sources(&self) -> &[sovra_answer::Source] {
        self.prompt
            .as_ref()
            .map(|p| p.sources.as_slice())
            .unwrap_or(&[])
    }

    /// What the answer says when no source is relevant: the refusal in the
    /// question's language.
    pub fn refusal(&self) -> &'static str {
        sovra_answer::language::detect(&self.question).refusal()
    }

    /// The citations of an answer generated from this retrieval's prompt.
    pub fn citations(&self, answer: &str) -> Vec<sovra_answer::Citation> {
        sovra_answer::citations(answer, &self.question, self.sources())
    }

    /// A finished (unstreamed) answer as it is returned.
    pub fn settle(&self, answer: &str) -> sovra_answer::Settled {
        sovra_answer::settle(answer, &self.question, self.sources())
    }
}

/// What a question retrieves, and the prompt built from it.
pub struct Question<'a> {
    pub text: &'a str,
    pub mode: Mode,
    pub top_k: usize,
    pub metadata: &'a BTreeMap<String, String>,
    /// The application's own system text (chat), kept after Sovra's rules.
    pub app_system: Option<String>,
    /// Earlier turns of the conversation (chat).
    pub history: Vec<ChatMessage>,
}

/// Retrieves with the caller's ACL and builds the prompt; notes what was
/// retrieved and used in the audit record.
pub async fn retrieve(
    state: &web::Data<AppState>,
    principal: &Principal,
    q: Question<'_>,
    max_tokens: usize,
    audit: &AuditCtx,
) -> Result<Retrieval, Problem> {
    let req = RetrievalRequest {
        question: q.text,
        mode: q.mode,
        top_k: q.top_k,
        metadata: q.metadata,
        gate: &state.gate,
    };
    let (hits, relevant) = sovra_answer::retrieve(&state.retriever, principal, &req).await?;
    audit.detail(
        "retrieved_chunk_ids",
        json!(hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>()),
    );
    let relevant_count = relevant.len();
    if relevant.is_empty() {
        return Ok(Retrieval {
            question: q.text.to_owned(),
            mode: q.mode,
            hits,
            prompt: None,
            relevant: 0,
        });
    }
    let budget = Budget {
        context_tokens: state.context_tokens,
        max_tokens,
        max_source_tokens: state.settings.answer.max_source_tokens,
    };
    let generator = state.generation.generator().clone();
    let question = q.text.to_owned();
    let (app_system, history) = (q.app_system, q.history);
    let prompt = web::block(move || {
        sovra_answer::build_prompt(
            generator.as_ref(),
            &question,
            app_system.as_deref(),
            &history,
            &relevant,
            budget,
        )
    })
    .instrument(tracing::info_span!("build_prompt"))
    .await??;
    note_prompt(audit, &prompt);
    Ok(Retrieval {
        question: q.text.to_owned(),
        mode: q.mode,
        hits,
        prompt: Some(prompt),
        relevant: relevant_count,
    })
}

/// A prompt without retrieval (chat with retrieval switched off).
pub async fn plain(
    state: &web::Data<AppState>,
    messages: Vec<ChatMessage>,
    max_tokens: usize,
    audit: &AuditCtx,
) -> Result<Prompt, Problem> {
    let budget = Budget {
        context_tokens: state.context_tokens,
        max_tokens,
        max_source_tokens: state.settings.answer.max_source_tokens,
    };
    let generator = state.generation.generator().clone();
    let prompt =
        web::block(move || sovra_answer::plain_prompt(generator.as_ref(), &messages, budget))
            .await??;
    note_prompt(audit, &prompt);
    Ok(prompt)
}

/// OpenAI's `usage` object; no generation (no source, no model run) is zeros.
pub fn usage(g: Option<&Generation>) -> Value {
    let (p, c) = g
        .map(|g| (g.prompt_tokens, g.completion_tokens))
        .unwrap_or((0, 0));
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// Document ids in first-seen order, each once.
fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.iter().any(|d| d == id) {
            out.push(id.to_owned());
        }
    }
    out
}

fn note_prompt(audit: &AuditCtx, prompt: &Prompt) {
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

/// Admits a generation, or answers 429 with `Retry-After`. An answer from
/// sources is generated without source markers (their tokens are banned;
/// citations are attributed afterwards).
pub fn submit(
    state: &AppState,
    prompt: &Prompt,
    mut params: SamplingParams,
    audit: &AuditCtx,
) -> Result<GenerationHandle, Problem> {
    audit.detail("model", json!(state.generation.generator().model_id()));
    if !prompt.sources.is_empty() {
        params.logit_bias.extend_from_slice(&state.marker_bans);
    }
    state
        .generation
        .submit(prompt.text.clone(), params)
        .map_err(|full| {
            state
                .metrics
                .generations
                .with_label_values(&["queue_full"])
                .inc();
            audit.detail("finish_reason", json!("queue_full"));
            let retry = state.settings.generator.retry_after_secs.to_string();
            let mut p = Problem::new(
                ErrorCode::Overloaded,
                format!(
                    "the model is busy ({} requests waiting); try again shortly",
                    full.waiting
                ),
            )
            .reason("queue_full");
            if let Ok(v) = HeaderValue::from_str(&retry) {
                p = p.header(header::RETRY_AFTER, v);
            }
            p
        })
}

/// Waits for a generation to finish (not streamed).
pub async fn collect(
    state: &AppState,
    mut handle: GenerationHandle,
) -> Result<Generation, Problem> {
    while let Some(event) = handle.recv().await {
        match event {
            GenerationEvent::Started | GenerationEvent::Text(_) => {}
            GenerationEvent::Done(g) => {
                observe(state, &g);
                return Ok(g);
            }
            GenerationEvent::Failed(e) => return Err(generation_failed(state, &e)),
        }
    }
    Err(Problem::internal("the generation ended without a result"))
}

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
    if g.completion_tokens > 0 {
        m.generation_first_token_seconds
            .observe(g.first_token_ms / 1e3);
    }
    m.generations
        .with_label_values(&[g.finish_reason.as_str()])
        .inc();
}

/// The outcome of a generation in the audit record.
pub fn note_outcome(audit: &AuditCtx, g: &Generation, cited: &[sovra_answer::Citation]) {
    for (k, v) in outcome_details(g, cited) {
        audit.detail(&k, v);
    }
}

fn outcome_details(g: &Generation, cited: &[sovra_answer::Citation]) -> Vec<(String, Value)> {
    vec![
        ("completion_tokens".into(), json!(g.completion_tokens)),
        ("prompt_tokens".into(), json!(g.prompt_tokens)),
        ("finish_reason".into(), json!(g.finish_reason.as_str())),
        (
            "cited_chunk_ids".into(),
            json!(
                cited
                    .iter()
                    .map(|c| c.chunk_id.as_str())
                    .collect::<Vec<_>>()
            ),
        ),
    ]
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

    /// Appends the outcome record: tokens, finish reason, cited chunks.
    /// Returns whether it was committed.
    pub async fn record(
        &self,
        state: &AppState,
        outcome: Result<(&Generation, &[sovra_answer::Citation]), &str>,
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
            Ok((g, cited)) => {
                crate::quota::charge_tokens(
                    state,
                    &self.tenant,
                    &self.subject,
                    g.completion_tokens,
                )
                .await;
                event.status = 200;
                event.document_ids = distinct(cited.iter().map(|c| c.document_id.as_str()));
                for (k, v) in outcome_details(g, cited) {
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

/// How a streamed answer is written: Sovra's named events or OpenAI's chunks.
pub trait StreamFormat: Send + 'static {
    /// The first event, sent before any token.
    fn start(&self) -> Bytes;
    fn text(&self, text: &str) -> Bytes;
    /// The closing events, with the citations drawn from the whole text.
    fn finish(&self, g: &Generation, citations: &[sovra_answer::Citation]) -> Vec<Bytes>;
    fn error(&self, problem: &Problem) -> Bytes;
    /// The citations of the whole text.
    fn citations(&self, text: &str) -> Vec<sovra_answer::Citation>;
}

/// Streams a generation as Server-Sent Events. A client that goes away
/// cancels the generation; the outcome is recorded in the audit trail either way.
pub fn stream(
    state: web::Data<AppState>,
    mut handle: GenerationHandle,
    recorder: OutcomeRecorder,
    format: impl StreamFormat,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let mut connected = tx.send(format.start()).await.is_ok();
        if !connected {
            handle.cancel();
        }
        while let Some(event) = handle.recv().await {
            match event {
                GenerationEvent::Started => {}
                GenerationEvent::Text(text) => {
                    if connected && tx.send(format.text(&text)).await.is_err() {
                        connected = false;
                        handle.cancel();
                    }
                }
                GenerationEvent::Done(g) => {
                    observe(&state, &g);
                    let citations = format.citations(&g.text);
                    // Fail closed: the closing events (citations, usage, the
                    // end marker) go out only once the outcome record is
                    // committed; otherwise the stream ends with an error
                    // event and the client never sees a completed answer.
                    let committed = recorder.record(&state, Ok((&g, &citations))).await;
                    if !connected {
                        return;
                    }
                    if committed || !state.settings.audit.fail_closed {
                        for bytes in format.finish(&g, &citations) {
                            if tx.send(bytes).await.is_err() {
                                break;
                            }
                        }
                    } else {
                        let problem = Problem::new(
                            ErrorCode::AuditUnavailable,
                            "the answer's audit record could not be committed; the answer is withdrawn",
                        );
                        let _ = tx.send(format.error(&problem)).await;
                    }
                    return;
                }
                GenerationEvent::Failed(e) => {
                    let problem = generation_failed(&state, &e);
                    let _ = tx.send(format.error(&problem)).await;
                    let _ = recorder.record(&state, Err("generation_failed")).await;
                    return;
                }
            }
        }
    });
    sse_response(rx)
}

/// A `text/event-stream` response fed by `body`'s receiver.
pub fn sse_response(body: mpsc::Receiver<Bytes>) -> HttpResponse {
    let stream = futures_util::stream::unfold(body, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, actix_web::Error>(b), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// One Server-Sent Event; `event` None for OpenAI's unnamed `data:` lines.
pub fn sse(event: Option<&str>, data: &Value) -> Bytes {
    let mut s = String::new();
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}
