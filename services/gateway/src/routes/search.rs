//! `POST /v1/search`: lexical, dense or hybrid retrieval over the chunks the
//! caller may see.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sovra_retrieval::{Mode, Retrieved};

use crate::extract::{Authorized, Read, ValidJson};
use crate::problem::Problem;
use crate::problem::ProblemBody;
use crate::routes::documents::flat_metadata;
use crate::routes::{question_text, top_k};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    query: String,
    top_k: Option<usize>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    filter: Filter,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
}

/// Ranked chunks, best first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub mode: Mode,
    pub results: Vec<Retrieved>,
    pub took_ms: f64,
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "retrieval",
    operation_id = "retrieval.search",
    summary = "Lexical, dense or hybrid search over the chunks the caller may see",
    description = r#"Role reader. `mode`: lexical (BM25 in Tantivy), dense (nearest neighbours in the vector store) or hybrid (both concurrently, fused by Reciprocal Rank Fusion; the default). The caller's tenant and ACL are required clauses inside both index queries. The returned document and chunk ids, the mode and the query (or its salted hash, by audit.query_policy) go into the audit record."#,
    request_body = SearchBody,
    responses(
        (status = 200, description = "ranked chunks", body = SearchResponse),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "unsupported media type", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
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
    Ok(HttpResponse::Ok().json(SearchResponse {
        mode: b.mode,
        results: hits,
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
}
