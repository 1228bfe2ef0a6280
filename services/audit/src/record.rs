use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One request, as the gateway saw it. Fields added by later stages
/// (query, chunks, model, token counts) go into `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Time-ordered id (UUIDv7).
    pub id: Uuid,
    /// Microseconds since the Unix epoch.
    pub ts_us: i64,
    pub request_id: String,
    pub trace_id: String,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub client_addr: Option<String>,
    pub method: String,
    pub route: String,
    pub action: String,
    pub status: i64,
    pub latency_us: i64,
    /// Why the request was denied or failed (a stable code), if it was.
    pub reason: Option<String>,
    /// Documents the request touched (written, deleted, retrieved, cited).
    pub document_ids: Vec<String>,
    /// A JSON object; keys are sorted in the canonical encoding.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// A new event stamped now, with a fresh UUIDv7.
    pub fn new(
        request_id: impl Into<String>,
        method: impl Into<String>,
        route: impl Into<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: Uuid::now_v7(),
            ts_us: now.timestamp_micros(),
            request_id: request_id.into(),
            trace_id: String::new(),
            subject: None,
            tenant: None,
            roles: Vec::new(),
            client_addr: None,
            method: method.into(),
            route: route.into(),
            action: String::new(),
            status: 0,
            latency_us: 0,
            reason: None,
            document_ids: Vec::new(),
            details: serde_json::Value::Object(Default::default()),
        }
    }
}

/// A committed event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// RFC 3339 form of `ts_us`, for people.
    pub ts: String,
    pub prev_hash: String,
    pub hash: String,
}

pub(crate) fn rfc3339(ts_us: i64) -> String {
    Utc.timestamp_micros(ts_us)
        .single()
        .map(|t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// Filters for queries and exports; all optional and combined with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub action: Option<String>,
    pub status: Option<i64>,
    pub document_id: Option<String>,
    pub request_id: Option<String>,
}

/// One page of events, newest first; `next_cursor` continues after the last.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub events: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}
