use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;

use crate::problem::ProblemBody;
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// `status` is `ok` when alive, `ready` when ready.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// The catalog-and-audit database (`sqlite` or `postgres`), when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<sovra_storage::Backend>,
}

/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "operations.healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "alive", body = Health),
    ),
    security(()),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        database: None,
    })
}

/// Ready: the database answers and every migration is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "operations.readyz",
    summary = "Readiness: database reachable and migrations applied",
    responses(
        (status = 200, description = "ready", body = Health),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(()),
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    match state.database.ready().await {
        Ok(true) => Ok(HttpResponse::Ok().json(Health {
            status: "ready",
            database: Some(state.database.backend()),
        })),
        Ok(false) => Err(Problem::new(
            ErrorCode::NotReady,
            "database migrations are not applied; run `sovra migrate`",
        )),
        Err(_) => Err(Problem::new(
            ErrorCode::NotReady,
            "the database does not answer",
        )),
    }
}

/// Prometheus text exposition, for the scraper only: with
/// `telemetry.metrics_token` set, to a bearer of it; without, to loopback
/// clients. Anyone else gets 404, as if there were no such route.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "operations.metrics",
    summary = "Prometheus metrics",
    description = r#"For the scraper: with telemetry.metrics_token set, to a bearer of it; without, to loopback clients only. Anyone else gets 404."#,
    responses(
        (status = 200, description = "text exposition format", content_type = "text/plain", body = String),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(()),
)]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let token = &state.settings.telemetry.metrics_token;
    let allowed = if token.is_empty() {
        req.peer_addr().is_some_and(|a| a.ip().is_loopback())
    } else {
        req.headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                use subtle::ConstantTimeEq;
                bool::from(given.as_bytes().ct_eq(token.as_bytes()))
            })
    };
    if !allowed {
        return Problem::new(ErrorCode::NotFound, "no such route").error_response();
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
