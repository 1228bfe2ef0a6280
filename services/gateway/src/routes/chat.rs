//! The OpenAI-compatible API: `POST /v1/chat/completions` and
//! `GET /v1/models`. Retrieval augmentation is on by default: the last user
//! message is the question, answered from the caller's permitted documents.
//! The extension field `sovra` (request) switches it off or tunes it; the
//! response's `sovra` field carries the citations and sources.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_answer::{Citation, Source};
use sovra_inference::{ChatMessage, FinishReason, Generation};
use sovra_retrieval::Mode;
use tokio::sync::mpsc;

use crate::answering::{self, OutcomeRecorder, Question, SamplingRequest, StreamFormat};
use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::{ErrorCode, Problem};
use crate::routes::documents::flat_metadata;
use crate::routes::{question_text, top_k};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<answering::Stop>,
    #[serde(default)]
    logit_bias: BTreeMap<String, f32>,
    n: Option<u32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    /// Accepted and ignored (OpenAI's end-user id); the audit trail has the principal.
    #[allow(dead_code)]
    user: Option<String>,
    /// Sovra's extension: retrieval switch and settings, and sampling knobs
    /// OpenAI lacks.
    #[serde(default)]
    sovra: Extension,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Answer from the caller's documents (default) or from the model alone.
    #[serde(default = "yes")]
    retrieval: bool,
    #[serde(default)]
    mode: Mode,
    top_k: Option<usize>,
    #[serde(default)]
    filter: BTreeMap<String, Value>,
    /// Sampling knobs OpenAI's API lacks.
    sampling_top_k: Option<usize>,
    repetition_penalty: Option<f32>,
}

fn yes() -> bool {
    true
}

impl Default for Extension {
    fn default() -> Self {
        Self {
            retrieval: true,
            mode: Mode::default(),
            top_k: None,
            filter: BTreeMap::new(),
            sampling_top_k: None,
            repetition_penalty: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    role: String,
    content: Content,
    #[allow(dead_code)]
    name: Option<String>,
}

/// A string, or OpenAI's list of content parts (text parts only).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn models(_auth: Authorized<Read>, state: web::Data<AppState>) -> HttpResponse {
    let g = state.generation.generator();
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": [{
            "id": g.model_id(),
            "object": "model",
            "created": 0,
            "owned_by": "sovra",
            "context_length": state.context_tokens,
        }],
    }))
}

fn messages(body: Vec<Message>) -> Result<Vec<ChatMessage>, Problem> {
    if body.is_empty() || body.len() > 256 {
        return Err(Problem::invalid_parameter("messages", "1 to 256 messages"));
    }
    let mut out = Vec::with_capacity(body.len());
    for (i, m) in body.into_iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(Problem::invalid_parameter(
                &format!("messages[{i}].role"),
                "must be system, developer, user or assistant",
            ));
        }
        let content = match m.content {
            Content::Text(t) => t,
            Content::Parts(parts) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        _ => {
                            return Err(Problem::invalid_parameter(
                                &format!("messages[{i}].content[{j}]"),
                                "only text parts are supported",
                            ));
                        }
                    }
                }
                text
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        out.push(ChatMessage::new(role, content));
    }
    Ok(out)
}

fn unsupported(field: &str, detail: &str) -> Problem {
    Problem::invalid_parameter(field, detail)
}

pub async fn completions(
    auth: Authorized<Read>,
    body: ValidJson<ChatBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let b = body.0;
    let model = state.generation.generator().model_id().to_owned();
    if b.model != model {
        return Err(Problem::new(
            ErrorCode::NotFound,
            format!(
                "no model `{}` is served here (GET /v1/models lists `{model}`)",
                b.model
            ),
        )
        .field("model"));
    }
    if b.n.is_some_and(|n| n != 1) {
        return Err(unsupported("n", "only n = 1 is supported"));
    }
    if b.presence_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported(
            "presence_penalty",
            "not supported; use sovra.repetition_penalty",
        ));
    }
    if b.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported(
            "frequency_penalty",
            "not supported; use sovra.repetition_penalty",
        ));
    }
    let include_usage = b.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let ext = b.sovra;
    let params = answering::sampling(
        &state,
        SamplingRequest {
            max_tokens: b.max_completion_tokens.or(b.max_tokens),
            temperature: b.temperature,
            top_p: b.top_p,
            top_k: ext.sampling_top_k,
            seed: b.seed,
            repetition_penalty: ext.repetition_penalty,
            stop: b.stop,
            logit_bias: b.logit_bias,
        },
        "",
    )?;
    let mut msgs = messages(b.messages)?;
    auth.audit.detail("retrieval", json!(ext.retrieval));
    // Every turn the model reads is accounted for: its role and digest
    // (system prompts and earlier turns included); the question itself by
    // the query policy below.
    auth.audit.detail(
        "messages",
        Value::Array(
            msgs.iter()
                .map(|m| json!({"role": m.role, "sha256": state.message_digest(&m.content)}))
                .collect(),
        ),
    );
    if !ext.retrieval
        && let Some(last) = msgs.last().filter(|m| m.role == "user")
    {
        auth.audit
            .detail("question", state.query_record(&last.content));
    }

    let (prompt, retrieval) = if ext.retrieval {
        let last = msgs.pop();
        let Some(question) = last.filter(|m| m.role == "user") else {
            return Err(Problem::invalid_parameter(
                "messages",
                "with retrieval on, the last message must be the user's question",
            ));
        };
        let q = question_text(
            &question.content,
            &format!("messages[{}].content", msgs.len()),
        )?;
        let top_k = top_k(
            ext.top_k,
            state.settings.answer.top_k,
            state.settings.search.max_top_k,
            "sovra.top_k",
        )?;
        let metadata = flat_metadata(ext.filter, "sovra.filter")?;
        auth.audit.detail("question", state.query_record(&q));
        auth.audit.detail("mode", json!(ext.mode.as_str()));
        let system: Vec<String> = msgs
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.clone())
            .collect();
        let history: Vec<ChatMessage> = msgs.into_iter().filter(|m| m.role != "system").collect();
        let r = answering::retrieve(
            &state,
            &auth.principal,
            Question {
                text: &q,
                mode: ext.mode,
                top_k,
                metadata: &metadata,
                app_system: (!system.is_empty()).then(|| system.join("\n")),
                history,
            },
            params.max_tokens,
            &auth.audit,
        )
        .await?;
        (r.prompt.clone(), Some(r))
    } else {
        let defused = msgs
            .into_iter()
            .map(|m| ChatMessage::new(&m.role, sovra_answer::defuse(&m.content)))
            .collect();
        (
            Some(answering::plain(&state, defused, params.max_tokens, &auth.audit).await?),
            None,
        )
    };
    let sources: Vec<Source> = retrieval
        .as_ref()
        .map(|r| r.sources().to_vec())
        .unwrap_or_default();
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let reply = Reply {
        id,
        created: now(),
        model,
        question: retrieval
            .as_ref()
            .map(|r| r.question.clone())
            .unwrap_or_default(),
        sources,
        retrieval: retrieval.as_ref().map(|r| r.details()),
    };

    let Some(prompt) = prompt else {
        auth.audit.detail("finish_reason", json!("no_sources"));
        let refusal = retrieval
            .as_ref()
            .map_or(sovra_answer::NO_SOURCES_ANSWER, |r| r.refusal());
        let g = Generation {
            text: refusal.into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: FinishReason::Stop,
            first_token_ms: 0.0,
            total_ms: 0.0,
        };
        if b.stream {
            let format = OpenAiChunks {
                reply,
                include_usage,
            };
            let (tx, rx) = mpsc::channel(8);
            let mut events = vec![format.start(), format.text(refusal)];
            events.extend(format.finish(&g, &[]));
            for ev in events {
                let _ = tx.try_send(ev);
            }
            return Ok(answering::sse_response(rx));
        }
        return Ok(HttpResponse::Ok().json(reply.completion(&g, &[])));
    };

    crate::quota::check_tokens(&state, &auth.principal).await?;
    let handle = answering::submit(&state, &prompt, params, &auth.audit)?;
    if b.stream {
        let recorder = OutcomeRecorder::new(
            &auth.principal,
            &auth.audit,
            "/v1/chat/completions",
            "chat.completed",
        );
        return Ok(answering::stream(
            state.clone(),
            handle,
            recorder,
            OpenAiChunks {
                reply,
                include_usage,
            },
        ));
    }
    let mut g = answering::collect(&state, handle).await?;
    let who = &auth.principal;
    crate::quota::charge_tokens(&state, &who.tenant, &who.subject, g.completion_tokens).await;
    let citations = if reply.sources.is_empty() {
        Vec::new()
    } else {
        let settled = sovra_answer::settle(&g.text, &reply.question, &reply.sources);
        g.text = settled.text;
        settled.citations
    };
    answering::note_outcome(&auth.audit, &g, &citations);
    Ok(HttpResponse::Ok().json(reply.completion(&g, &citations)))
}

/// What every chunk or completion of one reply repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
    /// The question answered from the sources (empty without retrieval).
    question: String,
    sources: Vec<Source>,
    retrieval: Option<Value>,
}

fn finish(g: &Generation) -> &'static str {
    match g.finish_reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

impl Reply {
    fn citations(&self, answer: &str) -> Vec<Citation> {
        sovra_answer::citations(answer, &self.question, &self.sources)
    }

    fn extension(&self, citations: &[Citation]) -> Value {
        json!({
            "citations": citations,
            "sources": self.sources,
            "retrieval": self.retrieval,
        })
    }

    fn completion(&self, g: &Generation, citations: &[Citation]) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": finish(g),
                "logprobs": null,
            }],
            "usage": answering::usage(Some(g)),
            "sovra": self.extension(citations),
        })
    }

    /// A `chat.completion.chunk` event with `fields` added.
    fn event(&self, fields: Value) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        });
        if let (Some(c), Value::Object(extra)) = (chunk.as_object_mut(), fields) {
            c.extend(extra);
        }
        answering::sse(None, &chunk)
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.event(json!({
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
        }))
    }

    /// The chunk with the finish reason; it carries the citations.
    fn last_chunk(&self, g: &Generation, citations: &[Citation]) -> Bytes {
        self.event(json!({
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish(g), "logprobs": null}],
            "sovra": self.extension(citations),
        }))
    }

    fn usage_chunk(&self, g: &Generation) -> Bytes {
        self.event(json!({"choices": [], "usage": answering::usage(Some(g))}))
    }
}

/// OpenAI's chunks: the role, content deltas, the finish reason with the
/// `sovra` extension, the usage when asked for, then `[DONE]`.
struct OpenAiChunks {
    reply: Reply,
    include_usage: bool,
}

impl StreamFormat for OpenAiChunks {
    fn start(&self) -> Bytes {
        self.reply
            .chunk(json!({"role": "assistant", "content": ""}), None)
    }

    fn text(&self, text: &str) -> Bytes {
        self.reply.chunk(json!({"content": text}), None)
    }

    fn finish(&self, g: &Generation, citations: &[Citation]) -> Vec<Bytes> {
        let mut out = vec![self.reply.last_chunk(g, citations)];
        if self.include_usage {
            out.push(self.reply.usage_chunk(g));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    fn error(&self, problem: &Problem) -> Bytes {
        answering::sse(
            None,
            &json!({"error": {"message": problem.detail, "type": "server_error", "code": problem.code.as_str()}}),
        )
    }

    fn citations(&self, text: &str) -> Vec<Citation> {
        self.reply.citations(text)
    }
}
