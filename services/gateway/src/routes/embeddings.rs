//! `POST /v1/embeddings`: OpenAI-compatible embeddings from the in-process model.

use actix_web::{HttpResponse, web};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::Problem;
use crate::problem::ProblemBody;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsBody {
    input: Input,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    user: Option<String>,
}

const MAX_INPUTS: usize = 256;

/// OpenAI's embedding list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Embedding {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

/// Floats, or with `encoding_format: base64` the little-endian f32 bytes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    operation_id = "openai.embeddings",
    summary = "OpenAI-compatible embeddings from the in-process model (embeddings.model: multilingual-e5-small or all-minilm-l6-v2, 384 dimensions)",
    description = r#"Role reader. Mean pooling over the attention mask, L2-normalised. `model` and `dimensions`, when given, must match the served model."#,
    request_body = EmbeddingsBody,
    responses(
        (status = 200, description = "OpenAI embeddings list", body = EmbeddingList),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "unsupported media type", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn embeddings(
    auth: Authorized<Read>,
    body: ValidJson<EmbeddingsBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let b = body.0;
    let _ = b.user;
    let embedder = state.documents.embedder().clone();
    let model = embedder.model_id().to_owned();
    if let Some(m) = b.model.as_deref().filter(|m| *m != model) {
        return Err(Problem::invalid_parameter(
            "model",
            format!("unknown model `{m}`; this gateway serves `{model}`"),
        ));
    }
    if let Some(d) = b.dimensions.filter(|d| *d != embedder.dimensions()) {
        return Err(Problem::invalid_parameter(
            "dimensions",
            format!(
                "{d} is not available; the model has {}",
                embedder.dimensions()
            ),
        ));
    }
    let base64 = match b.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(Problem::invalid_parameter(
                "encoding_format",
                "float or base64",
            ));
        }
    };
    let inputs = match b.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS || inputs.iter().any(|s| s.is_empty()) {
        return Err(Problem::invalid_parameter(
            "input",
            format!("1 to {MAX_INPUTS} non-empty strings"),
        ));
    }
    auth.audit.detail(
        "embeddings",
        json!({"inputs": inputs.len(), "model": model}),
    );
    let out = web::block(move || {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        embedder.embed(&refs, sovra_inference::TextKind::Passage)
    })
    .await??;
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    let data: Vec<Embedding> = out
        .into_iter()
        .enumerate()
        .map(|(index, e)| Embedding {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(e.vector)
            },
        })
        .collect();
    Ok(HttpResponse::Ok().json(EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}
