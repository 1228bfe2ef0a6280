//! The OpenAI-compatible API: `POST /v1/chat/completions` and
//! `GET /v1/models`. Retrieval augmentation is on by default: the last user
//! message is the question, answered from the caller's permitted documents.
//! The extension field `sovra` (request) switches it off or tunes it; the
//! response's `sovra` field carries the citations and sources. An adapter of
//! `sovra_answer::Answerer`'s event stream: OpenAI's completion, or its
//! chunks as Server-Sent Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sovra_answer::{Ask, Citation, Finished, Question, RetrievalReport, Source, Usage};
use sovra_inference::{ChatMessage, FinishReason};
use sovra_retrieval::Mode;

use crate::answers::record::OutcomeRecorder;
use crate::answers::sampling::{self, SamplingRequest, Stop};
use crate::answers::sse::{self, StreamFormat};
use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::ProblemBody;
use crate::problem::{ErrorCode, Problem};
use crate::routes::documents::flat_metadata;
use crate::routes::{question_text, top_k};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    stop: Option<Stop>,
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Sovra's extension field of a chat request (the openai client:
/// `extra_body={"sovra": {...}}`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ChatOptions)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    role: String,
    content: Content,
    #[allow(dead_code)]
    name: Option<String>,
}

/// A string, or OpenAI's list of content parts (text parts only).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

/// `GET /v1/models`: the one model served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Prompt plus completion tokens a request may use.
    pub context_length: usize,
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    operation_id = "openai.models",
    summary = "The model served (OpenAI-compatible)",
    description = r#"Role reader. One entry: the generator's model id (from the model folder's sovra-model.json) and the context budget in tokens."#,
    responses(
        (status = 200, description = "the model list", body = ModelList),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn models(_auth: Authorized<Read>, state: web::Data<AppState>) -> HttpResponse {
    let g = state.answerer.generation().generator();
    HttpResponse::Ok().json(ModelList {
        object: "list",
        data: vec![Model {
            id: g.model_id().to_owned(),
            object: "model",
            created: 0,
            owned_by: "sovra",
            context_length: state.answerer.context_tokens(),
        }],
    })
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

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    operation_id = "openai.completions",
    summary = "OpenAI-compatible chat completions, answered from the caller's documents by default",
    description = r#"Role reader. Follows OpenAI's Chat Completions API (`model`, `messages`, `stream`, `stream_options.include_usage`, `max_tokens`/`max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`, `logit_bias`, `n` = 1 only; `presence_penalty`/`frequency_penalty` other than 0 are refused, use sovra.repetition_penalty). Retrieval augmentation is on by default: the last message must be the user's question; system messages are kept after Sovra's own rules, earlier turns as history, and the question is answered from numbered sources as in /v1/query. The response (and, streamed, the chunk with the finish reason) carries the extension field `sovra`: `{citations, sources, retrieval}`. Streamed: `data:` chunks (`chat.completion.chunk`), a usage chunk when asked for, then `data: [DONE]`. Audited as `chat` (and `chat.completed` for a streamed outcome), like /v1/query."#,
    request_body = ChatBody,
    responses(
        (status = 200, description = "a chat.completion (or, with stream, Server-Sent Events of chat.completion.chunk)", content((Completion = "application/json"), (Chunk = "text/event-stream"))),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "unsupported media type", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "the model is busy or a quota is spent (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 500, description = "the model failed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn completions(
    auth: Authorized<Read>,
    body: ValidJson<ChatBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let b = body.0;
    let model = state
        .answerer
        .generation()
        .generator()
        .model_id()
        .to_owned();
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
    let params = sampling::validate(
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
    let ask = if ext.retrieval {
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
        Ask::Documents(Question {
            text: q,
            mode: ext.mode,
            top_k,
            metadata,
            app_system: (!system.is_empty()).then(|| system.join("\n")),
            history,
        })
    } else {
        if let Some(last) = msgs.last().filter(|m| m.role == "user") {
            auth.audit
                .detail("question", state.query_record(&last.content));
        }
        Ask::Conversation(msgs)
    };
    let prepared = state.answerer.prepare(&auth.principal, ask, params).await?;
    let retrieval = prepared.retrieval().cloned();
    let answer = crate::answers::start(&state, &auth.principal, prepared, &auth.audit).await?;
    let reply = Reply {
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        created: now(),
        model,
        sources: answer.sources().clone(),
        retrieval,
    };
    if b.stream {
        let recorder = OutcomeRecorder::new(
            &auth.principal,
            &auth.audit,
            "/v1/chat/completions",
            "chat.completed",
        );
        return Ok(sse::stream(
            state.clone(),
            answer,
            recorder,
            OpenAiChunks {
                reply,
                include_usage,
            },
        ));
    }
    let finished = crate::answers::collect(&state, &auth.principal, answer, &auth.audit).await?;
    Ok(HttpResponse::Ok().json(reply.completion(&finished)))
}

/// What every chunk or completion of one reply repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
    sources: Arc<[Source]>,
    /// `None` without retrieval.
    retrieval: Option<Arc<RetrievalReport>>,
}

/// OpenAI's finish reason (a cancelled generation has no reader left).
fn finish_reason(f: &Finished) -> &'static str {
    match f.finish_reason() {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// The response's `sovra` extension: citations, sources, retrieval.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplyExtension<'a> {
    pub citations: &'a [Citation],
    pub sources: &'a [Source],
    pub retrieval: Option<&'a RetrievalReport>,
}

/// `chat.completion`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Completion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<Choice<'a>>,
    pub usage: Usage,
    pub sovra: ReplyExtension<'a>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Choice<'a> {
    pub index: u32,
    pub message: AssistantMessage<'a>,
    pub finish_reason: &'static str,
    /// Always null: log probabilities are not returned.
    pub logprobs: Option<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssistantMessage<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

/// `chat.completion.chunk`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Chunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sovra: Option<ReplyExtension<'a>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub finish_reason: Option<&'static str>,
    /// Always null: log probabilities are not returned.
    pub logprobs: Option<Value>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

impl Reply {
    fn extension<'a>(&'a self, citations: &'a [Citation]) -> ReplyExtension<'a> {
        ReplyExtension {
            citations,
            sources: &self.sources,
            retrieval: self.retrieval.as_deref(),
        }
    }

    fn completion<'a>(&'a self, f: &'a Finished) -> Completion<'a> {
        Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: vec![Choice {
                index: 0,
                finish_reason: finish_reason(f),
                message: AssistantMessage {
                    role: "assistant",
                    content: &f.text,
                },
                logprobs: None,
            }],
            usage: f.usage(),
            sovra: self.extension(&f.citations),
        }
    }

    fn chunk<'a>(
        &'a self,
        choices: Vec<ChunkChoice<'a>>,
        usage: Option<Usage>,
        sovra: Option<ReplyExtension<'a>>,
    ) -> Bytes {
        sse::event(
            None,
            &Chunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices,
                usage,
                sovra,
            },
        )
    }

    fn delta(&self, delta: Delta<'_>) -> Bytes {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
                logprobs: None,
            }],
            None,
            None,
        )
    }
}

/// OpenAI's chunks: the role, content deltas, the finish reason with the
/// `sovra` extension, the usage when asked for, then `[DONE]`.
struct OpenAiChunks {
    reply: Reply,
    include_usage: bool,
}

impl StreamFormat for OpenAiChunks {
    fn sources(&self, _sources: &[Source]) -> Bytes {
        self.reply.delta(Delta {
            role: Some("assistant"),
            content: Some(""),
        })
    }

    fn text(&self, text: &str) -> Bytes {
        self.reply.delta(Delta {
            role: None,
            content: Some(text),
        })
    }

    fn finish(&self, f: &Finished) -> Vec<Bytes> {
        let last = ChunkChoice {
            index: 0,
            delta: Delta::default(),
            finish_reason: Some(finish_reason(f)),
            logprobs: None,
        };
        let mut out =
            vec![
                self.reply
                    .chunk(vec![last], None, Some(self.reply.extension(&f.citations))),
            ];
        if self.include_usage {
            out.push(self.reply.chunk(Vec::new(), Some(f.usage()), None));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    fn error(&self, problem: &Problem) -> Bytes {
        sse::event(
            None,
            &json!({"error": {"message": problem.detail, "type": "server_error", "code": problem.code.as_str()}}),
        )
    }
}
