//! `POST /v1/search`: lexical, dense or hybrid retrieval over the chunks the
//! caller may see.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_retrieval::Mode;

use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::Problem;
use crate::routes::documents::flat_metadata;
use crate::routes::{question_text, top_k};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    query: String,
    top_k: Option<usize>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    filter: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
}

pub async fn search(
    auth: Authorized<Read>,
    body: ValidJson<SearchBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let b = body.0;
    let query = question_text(&b.query, "query")?;
    let s = &state.settings.search;
    let top_k = top_k(b.top_k, s.default_top_k, s.max_top_k, "top_k")?;
    let metadata = flat_metadata(b.filter.metadata, "filter.metadata")?;
    auth.audit.detail("query", state.query_record(&query));
    auth.audit.detail("mode", json!(b.mode.as_str()));
    let started = Instant::now();
    let hits = state
        .retriever
        .retrieve(&auth.principal, &query, b.mode, top_k, &metadata)
        .await?;
    auth.audit.0.borrow_mut().document_ids = sovra_retrieval::document_ids(&hits);
    auth.audit.detail(
        "chunk_ids",
        json!(hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>()),
    );
    Ok(HttpResponse::Ok().json(json!({
        "mode": b.mode.as_str(),
        "results": hits,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}
