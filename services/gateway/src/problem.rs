//! Every error the HTTP API returns: an RFC 9457 `application/problem+json`
//! document with a stable `code`, built from the one table in [`ErrorCode`].
//! Details never echo a token or a secret.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The stable error codes; `docs/errors.md` documents each (a test checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    InvalidJson,
    InvalidParameter,
    UnsupportedMediaType,
    PayloadTooLarge,
    UnprocessableDocument,
    Conflict,
    Overloaded,
    RateLimited,
    GenerationFailed,
    AuditUnavailable,
    NotReady,
    Timeout,
    Internal,
}

impl ErrorCode {
    #[cfg(test)]
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidParameter,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnprocessableDocument,
        ErrorCode::Conflict,
        ErrorCode::Overloaded,
        ErrorCode::RateLimited,
        ErrorCode::GenerationFailed,
        ErrorCode::AuditUnavailable,
        ErrorCode::NotReady,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    /// (code, HTTP status, title)
    pub fn info(self) -> (&'static str, StatusCode, &'static str) {
        match self {
            ErrorCode::Unauthenticated => (
                "unauthenticated",
                StatusCode::UNAUTHORIZED,
                "Authentication required",
            ),
            ErrorCode::Forbidden => ("forbidden", StatusCode::FORBIDDEN, "Not allowed"),
            ErrorCode::NotFound => ("not_found", StatusCode::NOT_FOUND, "Not found"),
            ErrorCode::MethodNotAllowed => (
                "method_not_allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            ErrorCode::InvalidJson => {
                ("invalid_json", StatusCode::BAD_REQUEST, "Invalid JSON body")
            }
            ErrorCode::InvalidParameter => (
                "invalid_parameter",
                StatusCode::BAD_REQUEST,
                "Invalid parameter",
            ),
            ErrorCode::UnsupportedMediaType => (
                "unsupported_media_type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            ErrorCode::PayloadTooLarge => (
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ),
            ErrorCode::UnprocessableDocument => (
                "unprocessable_document",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Document could not be read",
            ),
            ErrorCode::Conflict => ("conflict", StatusCode::CONFLICT, "Conflict"),
            ErrorCode::Overloaded => (
                "overloaded",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests waiting for the model",
            ),
            ErrorCode::RateLimited => (
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
            ),
            ErrorCode::GenerationFailed => (
                "generation_failed",
                StatusCode::INTERNAL_SERVER_ERROR,
                "The model could not generate an answer",
            ),
            ErrorCode::AuditUnavailable => (
                "audit_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Audit trail unavailable",
            ),
            ErrorCode::NotReady => ("not_ready", StatusCode::SERVICE_UNAVAILABLE, "Not ready"),
            ErrorCode::Timeout => ("timeout", StatusCode::GATEWAY_TIMEOUT, "Request timed out"),
            ErrorCode::Internal => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.info().0
    }
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    /// The request field at fault (a JSON path or a query parameter).
    pub field: Option<String>,
    /// A stable reason recorded in the audit trail (e.g. `token_expired`).
    pub reason: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            field: None,
            reason: None,
            headers: Vec::new(),
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn invalid_parameter(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, detail).field(field)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, detail)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.code.info().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status, title) = self.code.info();
        let body = Body {
            kind: format!("urn:sovra:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: &self.detail,
            code,
            field: self.field.as_deref(),
        };
        let mut resp = HttpResponse::build(status);
        resp.content_type("application/problem+json");
        for (name, value) in &self.headers {
            resp.insert_header((name.clone(), value.clone()));
        }
        resp.json(body)
    }
}

impl From<sovra_audit::AuditError> for Problem {
    fn from(e: sovra_audit::AuditError) -> Self {
        match e {
            sovra_audit::AuditError::InvalidQuery { field, message } => {
                Problem::invalid_parameter(field, message)
            }
            other => {
                tracing::error!(error = %other, "audit store error");
                Problem::new(
                    ErrorCode::AuditUnavailable,
                    "the audit store could not be reached",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
                .unwrap_or_default();
        for c in ErrorCode::ALL {
            let (code, status, _) = c.info();
            let row = format!("| `{code}` | {} |", status.as_u16());
            assert!(
                doc.contains(&row),
                "docs/errors.md lacks the row starting {row}"
            );
        }
    }
}
