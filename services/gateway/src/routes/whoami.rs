use actix_web::HttpResponse;

use crate::extract::{AnyPrincipal, Authorized};
use crate::problem::ProblemBody;

/// The principal as the gateway sees it.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "auth",
    operation_id = "auth.whoami",
    summary = "The caller's principal as the gateway sees it",
    description = r#"Any authenticated caller."#,
    responses(
        (status = 200, description = "principal", body = sovra_auth::Principal),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn whoami(auth: Authorized<AnyPrincipal>) -> HttpResponse {
    HttpResponse::Ok().json(&auth.principal)
}
