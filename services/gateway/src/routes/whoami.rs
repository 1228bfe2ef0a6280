use actix_web::HttpResponse;

use crate::extract::{AnyPrincipal, Authorized};

/// The principal as the gateway sees it.
pub async fn whoami(auth: Authorized<AnyPrincipal>) -> HttpResponse {
    HttpResponse::Ok().json(&auth.principal)
}
