//! `POST /v1/dev/token`: a development token in one click, for the sign-in
//! page. Exists only with `auth.development = true` (404 otherwise); needs
//! no token itself, so the handler writes its own audit record.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sovra_audit::AuditEvent;
use sovra_auth::{DevTokenRequest, mint_development_token};

use crate::extract::ValidJson;
use crate::problem::ProblemBody;
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

const TTL_SECS: i64 = 8 * 3600;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenBody {
    sub: String,
    tenant: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// A development token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DevToken {
    pub token: String,
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
}

fn plain(field: &str, value: &str) -> Result<(), Problem> {
    if value.is_empty()
        || value.len() > 128
        || !value
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@:".contains(c))
    {
        return Err(Problem::invalid_parameter(
            field,
            "1 to 128 letters, digits or - _ . @ :",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/dev/token",
    tag = "auth",
    operation_id = "auth.token",
    summary = "A development token in one click (development mode only)",
    description = r#"Exists only with auth.development = true (404 otherwise). Needs no token; mints an HS256 development token (8 hours) for the given subject, tenant, roles and groups, and records the minting in the audit trail (action `dev.token`) before answering."#,
    request_body = DevTokenBody,
    responses(
        (status = 200, description = "the token", body = DevToken),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(()),
)]
pub async fn token(
    req: HttpRequest,
    body: ValidJson<DevTokenBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let started = Instant::now();
    if !state.settings.auth.development {
        return Err(Problem::new(ErrorCode::NotFound, "no such route"));
    }
    let b = body.0;
    plain("sub", &b.sub)?;
    plain("tenant", &b.tenant)?;
    for (i, g) in b.groups.iter().enumerate() {
        plain(&format!("groups[{i}]"), g)?;
    }
    if b.roles.is_empty() {
        return Err(Problem::invalid_parameter(
            "roles",
            "choose at least one role",
        ));
    }
    let minted = mint_development_token(
        &state.settings.auth,
        &DevTokenRequest {
            subject: b.sub.clone(),
            tenant: b.tenant.clone(),
            roles: b.roles.clone(),
            groups: b.groups.clone(),
            ttl_secs: TTL_SECS,
        },
    )
    .map_err(|e| Problem::invalid_parameter("roles", e.to_string()))?;
    let mut event = AuditEvent::new(uuid::Uuid::now_v7().to_string(), "POST", "/v1/dev/token");
    event.action = "dev.token".into();
    event.subject = Some(b.sub);
    event.tenant = Some(b.tenant);
    event.roles = b.roles;
    event.client_addr = req.peer_addr().map(|a| a.ip().to_string());
    event.status = 200;
    event.latency_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    event.details = json!({"groups": b.groups, "ttl_secs": TTL_SECS});
    // No token is handed out unless its minting is on the record.
    state.audit.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "development token not recorded");
        Problem::new(
            ErrorCode::AuditUnavailable,
            "the request could not be recorded in the audit trail, so no answer is given",
        )
    })?;
    Ok(HttpResponse::Ok().json(DevToken {
        token: minted,
        token_type: "Bearer",
        expires_in: TTL_SECS,
    }))
}
