//! `POST /v1/search`: BM25 over the chunks the caller may see.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_index::SearchRequest;

use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::Problem;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    query: String,
    top_k: Option<usize>,
    #[serde(default)]
    filter: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
}

pub async fn search(
    auth: Authorized<Read>,
    body: ValidJson<SearchBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let b = body.0;
    let query = b.query.trim().to_owned();
    if query.is_empty() || query.chars().count() > 2000 {
        return Err(Problem::invalid_parameter("query", "1 to 2000 characters"));
    }
    let s = &state.settings.search;
    let top_k = b.top_k.unwrap_or(s.default_top_k);
    if top_k == 0 || top_k > s.max_top_k {
        return Err(Problem::invalid_parameter(
            "top_k",
            format!("must be between 1 and {}", s.max_top_k),
        ));
    }
    let mut metadata = BTreeMap::new();
    for (k, v) in b.filter.metadata {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(x) => x.to_string(),
            _ => {
                return Err(Problem::invalid_parameter(
                    &format!("filter.metadata.{k}"),
                    "values are strings, numbers or booleans",
                ));
            }
        };
        metadata.insert(k, v);
    }
    auth.audit.detail("query", state.query_record(&query));
    let started = Instant::now();
    let index = state.documents.index().clone();
    let principal = auth.principal.clone();
    let hits = web::block(move || {
        let _span = tracing::info_span!("retrieve", mode = "lexical").entered();
        let mut req = SearchRequest::new(&principal, &query, top_k);
        req.metadata = metadata;
        index.search(&req)
    })
    .await
    .map_err(|_| Problem::internal("search failed"))?
    .map_err(|e| {
        tracing::error!(error = %e, "search failed");
        Problem::internal("search failed")
    })?;
    {
        let mut notes = auth.audit.0.borrow_mut();
        notes.document_ids = sovra_index::document_ids(&hits);
    }
    auth.audit.detail(
        "chunk_ids",
        json!(hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>()),
    );
    let results: Vec<Value> = hits
        .iter()
        .map(|h| json!({"document_id": h.document_id, "title": h.title, "chunk_id": h.chunk_id, "ordinal": h.ordinal, "score": h.score, "snippet": h.snippet}))
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({"results": results, "took_ms": started.elapsed().as_secs_f64() * 1e3})))
}
