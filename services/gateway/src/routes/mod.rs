//! Every HTTP route, in one table: method, path, audit action. The OpenAPI
//! document under docs/ must list each (a test checks).

mod audit;
mod chat;
mod dev;
pub mod documents;
mod embeddings;
mod health;
mod pages;
mod query;
mod search;
mod whoami;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::problem::{ErrorCode, Problem};

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// The `action` recorded in the audit trail (public routes are not audited).
    pub action: &'static str,
}

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/",
        action: "page",
    },
    Route {
        method: "GET",
        path: "/assets/{file}",
        action: "asset",
    },
    Route {
        method: "POST",
        path: "/v1/dev/token",
        action: "dev.token",
    },
    Route {
        method: "GET",
        path: "/healthz",
        action: "health",
    },
    Route {
        method: "GET",
        path: "/readyz",
        action: "ready",
    },
    Route {
        method: "GET",
        path: "/metrics",
        action: "metrics",
    },
    Route {
        method: "GET",
        path: "/v1/whoami",
        action: "whoami",
    },
    Route {
        method: "GET",
        path: "/v1/audit/events",
        action: "audit.query",
    },
    Route {
        method: "GET",
        path: "/v1/audit/events/{id}",
        action: "audit.read",
    },
    Route {
        method: "GET",
        path: "/v1/audit/export",
        action: "audit.export",
    },
    Route {
        method: "GET",
        path: "/v1/audit/verify",
        action: "audit.verify",
    },
    Route {
        method: "POST",
        path: "/v1/audit/prune",
        action: "audit.prune",
    },
    Route {
        method: "POST",
        path: "/v1/documents",
        action: "document.write",
    },
    Route {
        method: "GET",
        path: "/v1/documents",
        action: "document.list",
    },
    Route {
        method: "GET",
        path: "/v1/documents/{id}",
        action: "document.read",
    },
    Route {
        method: "DELETE",
        path: "/v1/documents/{id}",
        action: "document.delete",
    },
    Route {
        method: "POST",
        path: "/v1/search",
        action: "search",
    },
    Route {
        method: "POST",
        path: "/v1/embeddings",
        action: "embeddings",
    },
    Route {
        method: "POST",
        path: "/v1/query",
        action: "query",
    },
    Route {
        method: "POST",
        path: "/v1/chat/completions",
        action: "chat",
    },
    Route {
        method: "GET",
        path: "/v1/models",
        action: "models.list",
    },
];

/// The audit action of a matched route; `unknown` for anything else.
pub fn action_for(method: &str, pattern: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == pattern)
        .map(|r| r.action)
        .unwrap_or("unknown")
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/").route(web::get().to(pages::index)))
        .service(resource("/assets/{file}").route(web::get().to(pages::asset)))
        .service(resource("/v1/dev/token").route(web::post().to(dev::token)))
        .service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/v1/whoami").route(web::get().to(whoami::whoami)))
        .service(resource("/v1/audit/events").route(web::get().to(audit::events)))
        .service(resource("/v1/audit/events/{id}").route(web::get().to(audit::event)))
        .service(resource("/v1/audit/export").route(web::get().to(audit::export)))
        .service(resource("/v1/audit/verify").route(web::get().to(audit::verify)))
        .service(resource("/v1/audit/prune").route(web::post().to(audit::prune)))
        .service(
            resource("/v1/documents")
                .route(web::post().to(documents::create))
                .route(web::get().to(documents::list)),
        )
        .service(
            resource("/v1/documents/{id}")
                .route(web::get().to(documents::get))
                .route(web::delete().to(documents::delete)),
        )
        .service(resource("/v1/search").route(web::post().to(search::search)))
        .service(resource("/v1/embeddings").route(web::post().to(embeddings::embeddings)))
        .service(resource("/v1/query").route(web::post().to(query::query)))
        .service(resource("/v1/chat/completions").route(web::post().to(chat::completions)))
        .service(resource("/v1/models").route(web::get().to(chat::models)));
}

/// A question or query: trimmed, 1 to 2000 characters.
pub fn question_text(raw: &str, field: &str) -> Result<String, Problem> {
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > 2000 {
        return Err(Problem::invalid_parameter(field, "1 to 2000 characters"));
    }
    Ok(text.to_owned())
}

/// How many chunks to retrieve: `given` or `default`, 1 to `max`.
pub fn top_k(
    given: Option<usize>,
    default: usize,
    max: usize,
    field: &str,
) -> Result<usize, Problem> {
    let k = given.unwrap_or(default);
    if k == 0 || k > max {
        return Err(Problem::invalid_parameter(
            field,
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(k)
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> Problem {
    Problem::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

pub async fn not_found(req: HttpRequest) -> Problem {
    let _ = req;
    Problem::new(ErrorCode::NotFound, "no such route")
}

impl actix_web::Responder for Problem {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for r in ROUTES {
            let op = doc["paths"][r.path][r.method.to_lowercase()].clone();
            assert!(
                op.is_object(),
                "docs/openapi.json lacks {} {}",
                r.method,
                r.path
            );
        }
        let documented = doc["paths"].as_object().map(|m| m.len()).unwrap_or(0);
        let paths: std::collections::BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
        assert_eq!(
            documented,
            paths.len(),
            "docs/openapi.json documents paths the server lacks"
        );
    }
}
