//! `POST /v1/embeddings`: OpenAI-compatible embeddings from the in-process model.

use actix_web::{HttpResponse, web};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::Problem;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsBody {
    input: Input,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    user: Option<String>,
}

const MAX_INPUTS: usize = 256;

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
        embedder.embed(&refs)
    })
    .await??;
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    let data: Vec<Value> = out
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}
