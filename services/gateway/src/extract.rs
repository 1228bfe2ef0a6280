//! Extractors that make the checks impossible to forget:
//! [`Authorized<P>`] (the principal, checked against policy `P`),
//! [`ValidJson<T>`] and [`ValidQuery<T>`] (400 naming the field at fault).

use std::cell::RefCell;
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use serde::de::DeserializeOwned;
use sovra_auth::{Permission, Principal};

use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

/// What a handler adds to its request's audit record.
#[derive(Debug, Default)]
pub struct AuditNotes {
    /// The routed request, for answering on the error paths; always taken
    /// back by the pipeline (it would otherwise keep itself alive).
    pub request: Option<HttpRequest>,
    /// The request's id and trace id, for records a handler writes later
    /// (the outcome of a streamed answer).
    pub request_id: String,
    pub trace_id: String,
    pub client_addr: Option<String>,
    pub reason: Option<String>,
    pub document_ids: Vec<String>,
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The request's audit notes, shared with the middleware that commits them.
#[derive(Clone, Default)]
pub struct AuditCtx(pub Rc<RefCell<AuditNotes>>);

impl AuditCtx {
    pub fn detail(&self, key: &str, value: serde_json::Value) {
        self.0.borrow_mut().details.insert(key.to_owned(), value);
    }
    pub fn reason(&self, reason: &str) {
        self.0.borrow_mut().reason = Some(reason.to_owned());
    }
}

/// A permission a route requires.
pub trait Policy {
    const PERMISSION: Permission;
}

macro_rules! policy {
    ($name:ident, $perm:expr) => {
        pub struct $name;
        impl Policy for $name {
            const PERMISSION: Permission = $perm;
        }
    };
}
policy!(AnyPrincipal, Permission::Whoami);
policy!(Read, Permission::Read);
policy!(Ingest, Permission::Ingest);
policy!(Browse, Permission::Browse);
policy!(AuditRead, Permission::AuditRead);
policy!(AuditAdmin, Permission::AuditAdmin);

/// The authenticated principal, authorized for `P`. A handler that takes
/// this cannot run unless the caller holds one of `P`'s roles.
pub struct Authorized<P: Policy> {
    pub principal: Principal,
    pub audit: AuditCtx,
    _policy: PhantomData<P>,
}

impl<P: Policy> FromRequest for Authorized<P> {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let span = tracing::info_span!("authorize", permission = P::PERMISSION.as_str());
        let _entered = span.enter();
        let audit = req
            .extensions()
            .get::<AuditCtx>()
            .cloned()
            .unwrap_or_default();
        audit.0.borrow_mut().request = Some(req.clone());
        let Some(principal) = req.extensions().get::<Principal>().cloned() else {
            return ready(Err(Problem::new(
                ErrorCode::Unauthenticated,
                "no authenticated principal",
            )));
        };
        if !principal.can(P::PERMISSION) {
            let roles: Vec<&str> = P::PERMISSION.roles().iter().map(|r| r.as_str()).collect();
            let reason = format!("missing_role:{}", P::PERMISSION.as_str());
            audit.reason(&reason);
            if let Some(state) = req.app_data::<web::Data<AppState>>() {
                state
                    .metrics
                    .auth_denials
                    .with_label_values(&["missing_role"])
                    .inc();
            }
            tracing::info!(permission = P::PERMISSION.as_str(), "denied");
            return ready(Err(Problem::new(
                ErrorCode::Forbidden,
                format!(
                    "this action requires one of the roles: {}",
                    roles.join(", ")
                ),
            )
            .reason(reason)));
        }
        ready(Ok(Self {
            principal,
            audit,
            _policy: PhantomData,
        }))
    }
}

/// A JSON body: 415 unless `application/json`, 413 past the body limit,
/// 400 naming the field at fault.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ValidJson<T> {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.essence_str() == "application/json");
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(Problem::new(
                    ErrorCode::UnsupportedMediaType,
                    "the body must be application/json",
                )
                .field("content-type"));
            }
            let bytes = bytes.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        ErrorCode::PayloadTooLarge,
                        "the request body exceeds the limit",
                    )
                } else {
                    Problem::new(ErrorCode::InvalidJson, "the request body could not be read")
                }
            })?;
            Self::parse(&bytes)
        })
    }
}

impl<T: DeserializeOwned> ValidJson<T> {
    /// Parses a JSON body; errors name the field at fault.
    pub fn parse(bytes: &[u8]) -> Result<Self, Problem> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de)
            .map(ValidJson)
            .map_err(json_problem)
    }
}

/// A JSON body that does not fit its type, as a problem naming the field.
pub fn json_problem(e: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let field = if path == "." {
        // serde names missing and unknown fields in the message.
        message.split('`').nth(1).map(str::to_owned)
    } else {
        Some(path)
    };
    let problem = Problem::new(ErrorCode::InvalidJson, message);
    match field {
        Some(f) => problem.field(f),
        None => problem,
    }
}

/// Query parameters: unknown or malformed ones are a 400 naming the parameter.
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequest for ValidQuery<T> {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = form_urlencoded::parse(req.query_string().as_bytes());
        let de = serde_urlencoded::Deserializer::new(parsed);
        ready(
            serde_path_to_error::deserialize(de)
                .map(ValidQuery)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let message = e.into_inner().to_string();
                    let field = if path == "." {
                        // serde names unknown fields in the message: "unknown field `x`, …"
                        message
                            .split('`')
                            .nth(1)
                            .map(str::to_owned)
                            .unwrap_or_else(|| "query".into())
                    } else {
                        path
                    };
                    Problem::invalid_parameter(&field, message)
                }),
        )
    }
}
