use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// Alive: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: the database answers and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    match state.store.ready().await {
        Ok(true) => {
            Ok(HttpResponse::Ok()
                .json(json!({"status": "ready", "database": state.store.backend()})))
        }
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

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
