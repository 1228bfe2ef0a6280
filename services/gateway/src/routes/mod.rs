//! Every HTTP route, in one table: method, path, audit action, public or
//! not, handler. The OpenAPI document ([`openapi`], generated from the
//! handlers) lists each (a test checks).

mod audit;
mod chat;
mod dev;
pub mod documents;
mod embeddings;
mod health;
mod openapi;
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
    /// Answered without authentication and without an audit record by the
    /// pipeline: health, metrics, the static pages (which hold no data;
    /// every datum they show comes through the authenticated API), and the
    /// development token route (development mode only; it audits itself).
    pub public: bool,
    /// The actix route: method and handler.
    pub handler: fn() -> actix_web::Route,
}

/// Every route. The actix configuration ([`configure`]), the public-path
/// check ([`is_public`]) and the audit action ([`action_for`]) all come from
/// this table, and a test checks it against the OpenAPI document.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/",
        action: "page",
        public: true,
        handler: || web::get().to(pages::index),
    },
    Route {
        method: "GET",
        path: "/assets/{file}",
        action: "asset",
        public: true,
        handler: || web::get().to(pages::asset),
    },
    Route {
        method: "POST",
        path: "/v1/dev/token",
        action: "dev.token",
        public: true,
        handler: || web::post().to(dev::token),
    },
    Route {
        method: "GET",
        path: "/healthz",
        action: "health",
        public: true,
        handler: || web::get().to(health::healthz),
    },
    Route {
        method: "GET",
        path: "/readyz",
        action: "ready",
        public: true,
        handler: || web::get().to(health::readyz),
    },
    Route {
        method: "GET",
        path: "/metrics",
        action: "metrics",
        public: true,
        handler: || web::get().to(health::metrics),
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        action: "openapi",
        public: true,
        handler: || web::get().to(openapi::document),
    },
    Route {
        method: "GET",
        path: "/v1/whoami",
        action: "whoami",
        public: false,
        handler: || web::get().to(whoami::whoami),
    },
    Route {
        method: "GET",
        path: "/v1/audit/events",
        action: "audit.query",
        public: false,
        handler: || web::get().to(audit::events),
    },
    Route {
        method: "GET",
        path: "/v1/audit/events/{id}",
        action: "audit.read",
        public: false,
        handler: || web::get().to(audit::event),
    },
    Route {
        method: "GET",
        path: "/v1/audit/export",
        action: "audit.export",
        public: false,
        handler: || web::get().to(audit::export),
    },
    Route {
        method: "GET",
        path: "/v1/audit/verify",
        action: "audit.verify",
        public: false,
        handler: || web::get().to(audit::verify),
    },
    Route {
        method: "POST",
        path: "/v1/audit/prune",
        action: "audit.prune",
        public: false,
        handler: || web::post().to(audit::prune),
    },
    Route {
        method: "POST",
        path: "/v1/documents",
        action: "document.write",
        public: false,
        handler: || web::post().to(documents::create),
    },
    Route {
        method: "GET",
        path: "/v1/documents",
        action: "document.list",
        public: false,
        handler: || web::get().to(documents::list),
    },
    Route {
        method: "GET",
        path: "/v1/documents/{id}",
        action: "document.read",
        public: false,
        handler: || web::get().to(documents::get),
    },
    Route {
        method: "DELETE",
        path: "/v1/documents/{id}",
        action: "document.delete",
        public: false,
        handler: || web::delete().to(documents::delete),
    },
    Route {
        method: "POST",
        path: "/v1/search",
        action: "search",
        public: false,
        handler: || web::post().to(search::search),
    },
    Route {
        method: "POST",
        path: "/v1/embeddings",
        action: "embeddings",
        public: false,
        handler: || web::post().to(embeddings::embeddings),
    },
    Route {
        method: "POST",
        path: "/v1/query",
        action: "query",
        public: false,
        handler: || web::post().to(query::query),
    },
    Route {
        method: "POST",
        path: "/v1/chat/completions",
        action: "chat",
        public: false,
        handler: || web::post().to(chat::completions),
    },
    Route {
        method: "GET",
        path: "/v1/models",
        action: "models.list",
        public: false,
        handler: || web::get().to(chat::models),
    },
];

/// The audit action of a matched route; `unknown` for anything else.
pub use openapi::pretty as openapi_json;

pub fn action_for(method: &str, pattern: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == pattern)
        .map(|r| r.action)
        .unwrap_or("unknown")
}

/// Whether a request path is one of the table's public routes.
pub fn is_public(path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.public && matches_pattern(r.path, path))
}

/// `/assets/{file}` matches `/assets/app.js`: the same number of segments,
/// each literal or a `{name}` that takes one non-empty segment.
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter().zip(&q).all(|(a, b)| {
            if a.starts_with('{') && a.ends_with('}') {
                !b.is_empty()
            } else {
                a == b
            }
        })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for r in ROUTES {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    for path in paths {
        let resource = ROUTES
            .iter()
            .filter(|r| r.path == path)
            .fold(resource(path), |res, r| res.route((r.handler)()));
        cfg.service(resource);
    }
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
    fn public_paths_come_from_the_table() {
        for path in [
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/dev/token",
            "/assets/app.js",
        ] {
            assert!(is_public(path), "{path}");
        }
        for path in [
            "/v1/whoami",
            "/v1/documents",
            "/v1/documents/x",
            "/assets",
            "/assets/",
            "/assets/a/b",
            "/healthz/x",
            "/v1/audit/events",
        ] {
            assert!(!is_public(path), "{path}");
        }
    }

    #[test]
    fn every_route_is_in_the_generated_document_and_no_other() {
        let doc = serde_json::to_value(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
            .unwrap_or_default();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_lowercase()];
            assert!(
                op.is_object(),
                "the OpenAPI document lacks {} {}",
                r.method,
                r.path
            );
            // Public routes say they need no token; the others inherit the bearer scheme.
            let open = op["security"] == serde_json::json!([{}]);
            assert_eq!(open, r.public, "{} {}: security", r.method, r.path);
        }
        let mut documented = 0;
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                documented += 1;
                assert!(
                    ROUTES
                        .iter()
                        .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                    "the OpenAPI document has {method} {path}, which the route table lacks"
                );
            }
        }
        assert_eq!(documented, ROUTES.len());
    }

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let committed = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap_or_default();
        let generated = openapi_json().unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not the generated document: run `sovra openapi > docs/openapi.json`"
        );
    }
}
