//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and response types (`utoipa::ToSchema`).
//! Served at `GET /openapi.json`, printed by `sovra openapi`, and committed
//! as `docs/openapi.json` (a test checks that the three agree and that
//! every route of the table is in it).

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, chat, dev, documents, embeddings, health, pages, query, search, whoami};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sovra gateway API",
        description = "Every route except /healthz, /readyz, /metrics, /openapi.json, the pages and the development token route needs a bearer JWT and is recorded in the audit trail, allowed or denied. Errors are application/problem+json (see docs/errors.md). Every response carries X-Request-Id and X-Trace-Id."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        document,
        whoami::whoami,
        audit::events,
        audit::event,
        audit::export,
        audit::verify,
        audit::prune,
        documents::create,
        documents::list,
        documents::get,
        documents::delete,
        search::search,
        embeddings::embeddings,
        query::query,
        chat::completions,
        chat::models,
        pages::index,
        pages::asset,
        dev::token,
    ),
    components(schemas(documents::DocumentUpload)),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "answers", description = "Questions answered from the caller's documents, with citations"),
        (name = "retrieval", description = "Search over the chunks the caller may see"),
        (name = "documents", description = "Writing, listing, reading and deleting documents"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "openai", description = "OpenAI-compatible chat, models and embeddings"),
        (name = "auth", description = "Who the caller is; development tokens"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "pages", description = "The web pages"),
    )
)]
pub struct ApiDoc;

/// The bearer JWT scheme every non-public route requires.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as committed: pretty JSON with a final newline.
pub fn pretty() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_pretty_json().map(|s| s + "\n")
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "operations.openapi",
    summary = "This OpenAPI document",
    responses((status = 200, description = "the document", content_type = "application/json", body = Object)),
    security(()),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
