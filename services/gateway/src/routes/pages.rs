//! The web pages for staff and auditors, built into the binary: one HTML
//! page, one script, one stylesheet. No asset comes from anywhere else, and
//! the Content Security Policy (set on every response by the pipeline)
//! allows nothing but these.

use actix_web::{HttpResponse, web};

use crate::problem::{ErrorCode, Problem};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");

pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX)
}

pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, Problem> {
    let (body, content_type) = match file.as_str() {
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(Problem::new(ErrorCode::NotFound, "no such asset")),
    };
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}
