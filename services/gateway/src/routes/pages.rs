//! The web pages for staff and auditors, built into the binary: one HTML
//! page, one script, one stylesheet. No asset comes from anywhere else, and
//! the Content Security Policy (set on every response by the pipeline)
//! allows nothing but these.

use actix_web::{HttpResponse, web};

use crate::problem::ProblemBody;
use crate::problem::{ErrorCode, Problem};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");

#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    operation_id = "pages.index",
    summary = "The web pages (sign-in, Ask, Documents, Audit)",
    description = r#"Public: static HTML built into the binary; every datum the pages show comes through the authenticated API with the token the user signs in with (kept in session storage). Not audited. Every response of the server carries a Content Security Policy that allows only this server's own script, style and API."#,
    responses(
        (status = 200, description = "the page", content_type = "text/html", body = String),
    ),
    security(()),
)]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX)
}

#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "pages",
    operation_id = "pages.asset",
    summary = "The pages' script and stylesheet",
    description = r#"Public, built into the binary: `app.js`, `app.css`. Not audited."#,
    params(("file" = String, Path, description = "app.js or app.css")),
    responses(
        (status = 200, description = "the asset", content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(()),
)]
pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, Problem> {
    let (body, content_type) = match file.as_str() {
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(Problem::new(ErrorCode::NotFound, "no such asset")),
    };
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}
