use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// Alive: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: the database answers and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    match state.database.ready().await {
        Ok(true) => Ok(HttpResponse::Ok()
            .json(json!({"status": "ready", "database": state.database.backend()}))),
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
