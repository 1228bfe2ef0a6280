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

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody<'a> {
    /// `urn:sovra:problem:CODE`.
    #[serde(rename = "type")]
    #[schema(example = "urn:sovra:problem:forbidden")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: &'a str,
    /// Stable code, see docs/errors.md.
    pub code: &'a str,
    /// The request field at fault (JSON path, query parameter or header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
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

    /// The RFC 9457 document answered for this problem.
    pub fn body(&self) -> ProblemBody<'_> {
        let (code, status, title) = self.code.info();
        ProblemBody {
            kind: format!("urn:sovra:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: &self.detail,
            code,
            field: self.field.as_deref(),
        }
    }

    /// The stable code (docs/errors.md).
    pub fn code_str(&self) -> &'static str {
        self.code.as_str()
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
        let mut resp = HttpResponse::build(self.status_code());
        resp.content_type("application/problem+json");
        for (name, value) in &self.headers {
            resp.insert_header((name.clone(), value.clone()));
        }
        resp.json(self.body())
    }
}

// The one mapping from the libraries' errors to HTTP. An internal error is
// logged here, once, inside the request's span (so with its request id and
// trace id), and answered without its details.

fn internal(what: &'static str, e: &dyn std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "{what}");
    Problem::internal(what)
}

impl From<actix_web::error::BlockingError> for Problem {
    fn from(e: actix_web::error::BlockingError) -> Self {
        internal("a blocking task failed", &e)
    }
}

impl From<sovra_retrieval::RetrievalError> for Problem {
    fn from(e: sovra_retrieval::RetrievalError) -> Self {
        internal("retrieval failed", &e)
    }
}

impl From<sovra_catalog::CatalogError> for Problem {
    fn from(e: sovra_catalog::CatalogError) -> Self {
        match e {
            sovra_catalog::CatalogError::InvalidQuery { field, message } => {
                Problem::invalid_parameter(field, message)
            }
            other => internal("the catalog could not be read", &other),
        }
    }
}

impl From<sovra_inference::InferenceError> for Problem {
    fn from(e: sovra_inference::InferenceError) -> Self {
        match e {
            sovra_inference::InferenceError::Input(m) => Problem::invalid_parameter("input", m),
            other => internal("the model failed", &other),
        }
    }
}

impl From<sovra_answer::AnswerError> for Problem {
    fn from(e: sovra_answer::AnswerError) -> Self {
        match e {
            sovra_answer::AnswerError::TooLong { needed, budget } => Problem::invalid_parameter(
                "max_tokens",
                format!(
                    "the question and max_tokens need {needed} tokens; the context budget is {budget}"
                ),
            ),
            other => internal("the answer could not be prepared", &other),
        }
    }
}

impl From<sovra_documents::ServiceError> for Problem {
    fn from(e: sovra_documents::ServiceError) -> Self {
        use sovra_documents::ServiceError;
        use sovra_ingest::IngestError;
        match e {
            ServiceError::Ingest(IngestError::Unsupported(t)) => Problem::new(
                ErrorCode::UnsupportedMediaType,
                format!("unsupported document type `{t}` (supported: text/plain, text/markdown, text/html, application/pdf, DOCX)"),
            )
            .field("content_type"),
            ServiceError::Ingest(IngestError::TooLarge(m)) => {
                Problem::new(ErrorCode::PayloadTooLarge, m)
            }
            ServiceError::Ingest(e @ (IngestError::Corrupt(_) | IngestError::Empty)) => {
                Problem::new(ErrorCode::UnprocessableDocument, e.to_string())
                    .reason("document_unreadable")
            }
            ServiceError::NotFound(_) => Problem::new(
                ErrorCode::NotFound,
                "no document with that id is visible to you",
            ),
            other => internal("the document could not be stored; nothing was written", &other),
        }
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
