//! The audit trail for auditors: query, read, export, verify; prune for admins.
//! Reading the trail is itself audited (the pipeline records these requests).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use sovra_audit::EventFilter;
use sovra_config::PruneRefusal;

use crate::export::{csv_rows, jsonl_rows};
use crate::problem::ProblemBody;
use sovra_auth::{Principal, Role};

use crate::extract::{AuditAdmin, AuditRead, Authorized, ValidJson, ValidQuery};
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterQuery {
    since: Option<String>,
    until: Option<String>,
    subject: Option<String>,
    tenant: Option<String>,
    action: Option<String>,
    status: Option<i64>,
    document_id: Option<String>,
    request_id: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
    format: Option<String>,
}

pub fn parse_time(field: &str, value: &str) -> Result<i64, Problem> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|_| {
            Problem::invalid_parameter(
                field,
                "expected an RFC 3339 time such as 2026-11-28T09:00:00Z",
            )
        })
}

impl FilterQuery {
    /// The filter, scoped to the caller: an auditor reads only their own
    /// tenant's records; an admin reads every tenant's.
    fn filter(&self, who: &Principal) -> Result<EventFilter, Problem> {
        let mut tenant = self.tenant.clone();
        if !who.has_role(Role::Admin) {
            match &tenant {
                Some(t) if *t != who.tenant => {
                    return Err(Problem::new(
                        ErrorCode::Forbidden,
                        "auditors read their own tenant's records only",
                    )
                    .field("tenant")
                    .reason("cross_tenant"));
                }
                _ => tenant = Some(who.tenant.clone()),
            }
        }
        Ok(EventFilter {
            since_us: self
                .since
                .as_deref()
                .map(|v| parse_time("since", v))
                .transpose()?,
            until_us: self
                .until
                .as_deref()
                .map(|v| parse_time("until", v))
                .transpose()?,
            subject: self.subject.clone(),
            tenant,
            action: self.action.clone(),
            status: self.status,
            document_id: self.document_id.clone(),
            request_id: self.request_id.clone(),
        })
    }
}

fn filter_json(f: &EventFilter) -> serde_json::Value {
    json!({
        "since_us": f.since_us, "until_us": f.until_us, "subject": f.subject, "tenant": f.tenant,
        "action": f.action, "status": f.status, "document_id": f.document_id, "request_id": f.request_id,
    })
}

/// `GET /v1/audit/events`: newest first, cursor-paged.
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    tag = "audit",
    operation_id = "audit.events",
    summary = "Query audit events, newest first",
    description = r#"Roles auditor (own tenant) and admin (every tenant). Reading the trail is itself audited."#,
    params(FilterQuery),
    responses(
        (status = 200, description = "one page", body = sovra_audit::Page),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn events(
    auth: Authorized<AuditRead>,
    q: ValidQuery<FilterQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let q = q.0;
    if q.format.is_some() {
        return Err(Problem::invalid_parameter(
            "format",
            "format applies to /v1/audit/export only",
        ));
    }
    let filter = q.filter(&auth.principal)?;
    auth.audit.detail("filter", filter_json(&filter));
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid_parameter(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let page = state
        .store
        .query(&filter, q.cursor.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /v1/audit/events/{id}`.
#[utoipa::path(
    get,
    path = "/v1/audit/events/{id}",
    tag = "audit",
    operation_id = "audit.event",
    summary = "One audit event by id",
    description = r#"Roles auditor (own tenant) and admin."#,
    params(("id" = String, Path, description = "the event's UUID")),
    responses(
        (status = 200, description = "the record", body = sovra_audit::AuditRecord),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn event(
    auth: Authorized<AuditRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    auth.audit.detail("event_id", json!(id.as_str()));
    let record = state.store.get(&id).await?;
    match record {
        Some(r)
            if auth.principal.has_role(Role::Admin)
                || r.event.tenant.as_deref() == Some(&auth.principal.tenant) =>
        {
            Ok(HttpResponse::Ok().json(r))
        }
        _ => Err(Problem::new(
            ErrorCode::NotFound,
            "no audit event with that id",
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
}

const EXPORT_PAGE: u32 = 1000;

/// `GET /v1/audit/export?format=jsonl|csv`: streams the matching records, oldest first.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    operation_id = "audit.export",
    summary = "Stream audit records, oldest first",
    description = r#"Roles auditor (own tenant) and admin. CSV joins lists with ';' and writes details as JSON."#,
    params(FilterQuery),
    responses(
        (status = 200, description = "the records, one per line", content((sovra_audit::AuditRecord = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn export(
    auth: Authorized<AuditRead>,
    q: ValidQuery<FilterQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let q = q.0;
    let format = match q.format.as_deref() {
        None | Some("jsonl") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some(_) => return Err(Problem::invalid_parameter("format", "must be jsonl or csv")),
    };
    if q.cursor.is_some() || q.limit.is_some() {
        let field = if q.cursor.is_some() {
            "cursor"
        } else {
            "limit"
        };
        return Err(Problem::invalid_parameter(
            field,
            "exports stream every matching record; use /v1/audit/events to page",
        ));
    }
    let filter = q.filter(&auth.principal)?;
    auth.audit.detail("filter", filter_json(&filter));
    auth.audit.detail(
        "format",
        json!(if format == Format::Csv {
            "csv"
        } else {
            "jsonl"
        }),
    );
    let store = state.store.clone();
    // (after_seq, first page?, finished?)
    let body = stream::unfold((0i64, true, false), move |(after, first, done)| {
        let store = store.clone();
        let filter = filter.clone();
        async move {
            if done {
                return None;
            }
            match store.export_page(&filter, after, EXPORT_PAGE).await {
                Ok(records) => {
                    let last = records.last().map(|r| r.seq).unwrap_or(after);
                    let finished = (records.len() as u32) < EXPORT_PAGE;
                    let bytes = match format {
                        Format::Csv => csv_rows(&records, first),
                        Format::Jsonl => jsonl_rows(&records),
                    };
                    match bytes {
                        Ok(bytes) => Some((
                            Ok::<_, actix_web::Error>(web::Bytes::from(bytes)),
                            (last, false, finished),
                        )),
                        Err(e) => {
                            tracing::error!(error = %e, "audit export failed midway");
                            Some((
                                Err(actix_web::error::ErrorInternalServerError("export failed")),
                                (after, false, true),
                            ))
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed midway");
                    Some((
                        Err(actix_web::error::ErrorInternalServerError("export failed")),
                        (after, false, true),
                    ))
                }
            }
        }
    });
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "sovra-audit.csv"),
        Format::Jsonl => ("application/x-ndjson", "sovra-audit.jsonl"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .streaming(body))
}

/// `GET /v1/audit/verify`: walks the whole chain.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    operation_id = "audit.verify",
    summary = "Walk the hash chain and report the first broken link",
    description = r#"Roles auditor and admin."#,
    responses(
        (status = 200, description = "the report (ok may be false)", body = sovra_audit::VerifyReport),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn verify(
    auth: Authorized<AuditRead>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let report = state
        .store
        .verify(state.checkpoint_verifier.as_ref())
        .await?;
    auth.audit.detail("verify_ok", json!(report.ok));
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Records older than this time are removed behind a signed checkpoint.
    before: String,
}

/// `POST /v1/audit/prune`: admins remove records older than `before`.
#[utoipa::path(
    post,
    path = "/v1/audit/prune",
    tag = "audit",
    operation_id = "audit.prune",
    summary = "Remove records older than a time behind a signed checkpoint",
    description = r#"Role admin. Refused while audit.retention_days is 0 (409, reason retention_unlimited) and for a `before` later than now minus the retention period (400 naming before)."#,
    request_body = PruneRequest,
    responses(
        (status = 200, description = "what was pruned", body = sovra_audit::PruneReport),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "refused by the retention settings", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "unsupported media type", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn prune(
    auth: Authorized<AuditAdmin>,
    body: ValidJson<PruneRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let before = parse_time("before", &body.0.before)?;
    let now = Utc::now().timestamp_micros();
    if before > now {
        return Err(Problem::invalid_parameter(
            "before",
            "must not be in the future",
        ));
    }
    match state.settings.audit.check_prune(before, now) {
        Ok(()) => {}
        Err(e @ PruneRefusal::RetentionUnlimited) => {
            return Err(Problem::new(ErrorCode::Conflict, e.to_string())
                .field("before")
                .reason("retention_unlimited"));
        }
        Err(e @ PruneRefusal::WithinRetention { .. }) => {
            return Err(Problem::invalid_parameter("before", e.to_string()));
        }
    }
    let Some(key) = &state.checkpoint_key else {
        return Err(Problem::new(
            ErrorCode::Conflict,
            "pruning signs a checkpoint and no audit.checkpoint_key_file is configured",
        )
        .reason("no_checkpoint_key"));
    };
    let report = state.store.prune_before(before, key).await?;
    auth.audit.detail("prune", json!({"before_us": before, "pruned": report.pruned, "checkpoint_seq": report.checkpoint_seq}));
    Ok(HttpResponse::Ok().json(report))
}
