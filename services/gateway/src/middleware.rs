//! The request pipeline every route goes through:
//! request id and trace -> authenticate -> handler (which authorizes) ->
//! audit commit (fail closed) -> metrics and headers.

use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use sovra_audit::AuditEvent;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::denials::Verdict;
use crate::extract::AuditCtx;
use crate::problem::{ErrorCode, Problem};
use crate::routes;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// The Content Security Policy of every response: only this server's own
/// script, style and API; no inline script, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A caller's `X-Request-Id` is kept when it is short and plain; otherwise a UUIDv7.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string())
}

pub async fn pipeline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(
            req.into_response(Problem::internal("application state missing").error_response())
        );
    };
    let request_id = request_id(req.headers());
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "request",
        otel.name = Empty,
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = %request_id,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id().to_string();

    let work = async move {
        let mut res = if routes::is_public(req.path()) {
            next.call(req).await?.map_into_boxed_body()
        } else {
            handle_audited(req, next, &state, &request_id, &trace_id, &method, started).await?
        };
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let status = res.status();
        let span = tracing::Span::current();
        span.record("otel.name", format!("{method} {route}"));
        span.record("http.route", route.as_str());
        span.record("http.response.status_code", status.as_u16());
        let status_label = status.as_u16().to_string();
        let labels = [route.as_str(), method.as_str(), status_label.as_str()];
        state.metrics.http_requests.with_label_values(&labels).inc();
        state
            .metrics
            .http_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        let headers = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&trace_id) {
            headers.insert(TRACE_ID, v);
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
        );
        headers.insert(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        tracing::info!(
            status = status.as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "request"
        );
        Ok(res)
    };
    work.instrument(span).await
}

async fn handle_audited(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &web::Data<AppState>,
    request_id: &str,
    trace_id: &str,
    method: &str,
    started: Instant,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let client_addr = req.peer_addr().map(|a| a.ip().to_string());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned));
    let notes = AuditCtx::default();
    {
        let mut n = notes.0.borrow_mut();
        n.request_id = request_id.to_owned();
        n.trace_id = trace_id.to_owned();
        n.client_addr = client_addr.clone();
    }

    let authenticated = match authorization {
        Some(Err(_)) => Err(sovra_auth::AuthError::Malformed),
        Some(Ok(h)) => {
            state
                .auth
                .authenticate_header(Some(&h))
                .instrument(tracing::info_span!("authenticate"))
                .await
        }
        None => Err(sovra_auth::AuthError::Missing),
    };

    let mut event = AuditEvent::new(request_id, method, "unmatched");
    event.trace_id = trace_id.to_owned();
    event.client_addr = client_addr;

    let mut denial: Option<String> = None;
    let res = match authenticated {
        Err(e) => {
            denial = Some(e.code().to_owned());
            state
                .metrics
                .auth_denials
                .with_label_values(&[e.code()])
                .inc();
            tracing::info!(reason = e.code(), "unauthenticated");
            let client = event.client_addr.as_deref().unwrap_or("unknown");
            if let Verdict::Limited { retry_after_secs } = state.denials.check(client).await {
                // Past this client's allowance: no write of its own; the
                // refusal is counted into the client's summary record.
                let mut problem = Problem::new(
                    ErrorCode::RateLimited,
                    "too many failed authentications from this address; retry later",
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    problem = problem.header(header::RETRY_AFTER, v);
                }
                return Ok(req.into_response(problem.error_response()));
            }
            let problem = Problem::new(ErrorCode::Unauthenticated, e.to_string())
                .reason(e.code())
                .header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            req.into_response(problem.error_response())
        }
        Ok(principal) => {
            event.subject = Some(principal.subject.clone());
            event.tenant = Some(principal.tenant.clone());
            event.roles = principal
                .role_names()
                .into_iter()
                .map(str::to_owned)
                .collect();
            if let Err(problem) = crate::quota::check_requests(state, &principal)
                .instrument(tracing::info_span!("quota"))
                .await
            {
                denial = problem.reason.clone();
                req.into_response(problem.error_response())
            } else {
                req.extensions_mut().insert(principal);
                req.extensions_mut().insert(notes.clone());
                let timeout = Duration::from_secs(state.settings.server.handler_timeout_secs);
                // Routing happens inside `next.call`; no clone of the request may
                // be held across it. The `Authorized` extractor leaves one in the
                // notes for the error paths below, taken back before returning.
                let outcome = tokio::time::timeout(timeout, next.call(req)).await;
                let routed = notes.0.borrow_mut().request.take();
                match (outcome, routed) {
                    (Ok(Ok(res)), _) => res.map_into_boxed_body(),
                    (Ok(Err(e)), Some(r)) => ServiceResponse::new(r, e.error_response()),
                    (Err(_), Some(r)) => ServiceResponse::new(
                        r,
                        Problem::new(ErrorCode::Timeout, "the request took too long")
                            .error_response(),
                    ),
                    (failed, None) => {
                        // No request to answer with: record the failure, then let
                        // actix answer with the error itself.
                        let (status, error) = match failed {
                            Ok(Err(e)) => (e.as_response_error().status_code(), e),
                            _ => (
                                actix_web::http::StatusCode::GATEWAY_TIMEOUT,
                                actix_web::Error::from(Problem::new(
                                    ErrorCode::Timeout,
                                    "the request took too long",
                                )),
                            ),
                        };
                        event.action = "unknown".into();
                        event.status = i64::from(status.as_u16());
                        event.reason = Some(format!("http_{}", status.as_u16()));
                        event.latency_us =
                            i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
                        let _ = state.audit.append(event).await;
                        return Err(error);
                    }
                }
            }
        }
    };

    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status();
    let notes = notes.0.take();
    let http_req = res.request().clone();
    event.action = routes::action_for(method, &route).to_owned();
    event.route = route;
    event.status = i64::from(status.as_u16());
    event.latency_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    event.reason = denial.or(notes.reason).or_else(|| {
        res.response()
            .error()
            .map(|e| match e.as_error::<Problem>() {
                Some(p) => p
                    .reason
                    .clone()
                    .unwrap_or_else(|| p.code.as_str().to_owned()),
                None => format!("http_{}", status.as_u16()),
            })
    });
    event.document_ids = notes.document_ids;
    event.details = serde_json::Value::Object(notes.details);

    let committed = state
        .audit
        .append(event)
        .instrument(tracing::info_span!("audit_write"))
        .await;
    Ok(match committed {
        Ok(_) => res,
        Err(e) => {
            tracing::error!(error = %e, "audit record not committed");
            if state.settings.audit.fail_closed {
                drop(res);
                ServiceResponse::new(
                    http_req,
                    Problem::new(
                        ErrorCode::AuditUnavailable,
                        "the request could not be recorded in the audit trail, so no answer is given",
                    )
                    .error_response(),
                )
            } else {
                res
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("a b<script>"));
        assert_ne!(request_id(&h), "a b<script>");
    }
}
