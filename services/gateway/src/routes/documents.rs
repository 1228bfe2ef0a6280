//! Documents: write (JSON or multipart), list, open, delete.

use std::collections::BTreeMap;

use actix_multipart::Multipart;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sovra_auth::{Acl, Principal};
use sovra_catalog::ListFilter;
use sovra_documents::{NewDocument, ServiceError};
use sovra_ingest::Format;

use crate::extract::{AuditCtx, Authorized, Browse, Ingest, ValidJson, json_problem};
use crate::problem::ProblemBody;
use crate::problem::{ErrorCode, Problem};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentJson {
    id: Option<String>,
    title: String,
    text: Option<String>,
    /// Base64 of the file's bytes, with `content_type`.
    content: Option<String>,
    content_type: Option<String>,
    /// Where the document came from (a file name, a URL); default `api`.
    source: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    tenant: Option<String>,
    acl: Acl,
}

/// One document, or an array of them (a bulk write). For the OpenAPI
/// document: `create` reads an array element by element, so that one bad
/// document is reported in its place.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum DocumentsJson {
    One(Box<DocumentJson>),
    Many(Vec<DocumentJson>),
}

/// A `multipart/form-data` upload (the schema of the form; the parts are
/// read one by one in `create_multipart`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DocumentUpload {
    /// The file; its type comes from the part's content type or name.
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
    id: Option<String>,
    title: Option<String>,
    tenant: Option<String>,
    /// Comma-separated.
    acl_groups: Option<String>,
    /// Comma-separated.
    acl_users: Option<String>,
    /// A JSON object of string, number or boolean values.
    metadata: Option<String>,
}

/// What a write did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentWritten {
    pub id: String,
    pub version: i64,
    pub chunks: i64,
    /// The same bytes, title, ACL and metadata were already stored: nothing
    /// was rewritten.
    pub unchanged: bool,
    pub created: bool,
    pub content_hash: String,
    pub title: String,
    pub tenant: String,
}

fn valid_id(id: &str) -> Result<(), Problem> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(Problem::invalid_parameter(
            "id",
            "1 to 128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
        ));
    }
    Ok(())
}

/// Bounds on what a document's metadata and ACL may hold: both are copied
/// into every chunk of both indexes, so they are bounded per document.
const MAX_METADATA_KEYS: usize = 32;
const MAX_METADATA_VALUE_CHARS: usize = 512;
const MAX_METADATA_BYTES: usize = 8 * 1024;
const MAX_ACL_ENTRIES: usize = 256;
const MAX_ACL_NAME_CHARS: usize = 128;
const MAX_ACL_BYTES: usize = 16 * 1024;

fn too_large(field: &str, detail: String) -> Problem {
    Problem::new(ErrorCode::PayloadTooLarge, detail).field(field)
}

/// Metadata as flat strings: string, number and boolean values only, keys
/// of letters, digits, `_` and `-` (every index reads such a key the same
/// way, in filters too), sizes bounded; the field at fault is named under
/// `prefix`.
pub fn flat_metadata(
    meta: BTreeMap<String, Value>,
    prefix: &str,
) -> Result<BTreeMap<String, String>, Problem> {
    if meta.len() > MAX_METADATA_KEYS {
        return Err(too_large(
            prefix,
            format!("at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    let flat: BTreeMap<String, String> = meta
        .into_iter()
        .map(|(k, v)| {
            let field = format!("{prefix}.{k}");
            if k.is_empty()
                || k.chars().count() > 64
                || !k
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Problem::invalid_parameter(
                    &field,
                    "keys are 1 to 64 letters, digits, '_' or '-'",
                ));
            }
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(Problem::invalid_parameter(
                        &field,
                        "values are strings, numbers or booleans",
                    ));
                }
            };
            if v.chars().count() > MAX_METADATA_VALUE_CHARS {
                return Err(too_large(
                    &field,
                    format!("values are at most {MAX_METADATA_VALUE_CHARS} characters"),
                ));
            }
            Ok((k, v))
        })
        .collect::<Result<_, _>>()?;
    let bytes: usize = flat.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(too_large(
            prefix,
            format!("at most {MAX_METADATA_BYTES} bytes of keys and values in all"),
        ));
    }
    Ok(flat)
}

/// Bounds an ACL's lists; `fields` names them as the request did.
fn bounded_acl(acl: &Acl, fields: [&str; 2]) -> Result<(), Problem> {
    for (list, field) in [(&acl.groups, fields[0]), (&acl.users, fields[1])] {
        if list.len() > MAX_ACL_ENTRIES {
            return Err(too_large(
                field,
                format!("at most {MAX_ACL_ENTRIES} entries"),
            ));
        }
        if list.iter().any(|n| n.chars().count() > MAX_ACL_NAME_CHARS) {
            return Err(too_large(
                field,
                format!("names are at most {MAX_ACL_NAME_CHARS} characters"),
            ));
        }
    }
    let bytes: usize = acl.groups.iter().chain(&acl.users).map(String::len).sum();
    if bytes > MAX_ACL_BYTES {
        return Err(too_large(
            fields[0],
            format!("at most {MAX_ACL_BYTES} bytes of names in all"),
        ));
    }
    Ok(())
}

/// Checks the fields every write shares and fills in defaults.
fn prepare(
    auth: &Authorized<Ingest>,
    id: Option<String>,
    title: String,
    tenant: Option<String>,
    acl: Acl,
    acl_fields: [&str; 2],
) -> Result<(String, String, String, Acl), Problem> {
    let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    valid_id(&id)?;
    let title = title.trim().to_owned();
    if title.is_empty() || title.chars().count() > 512 {
        return Err(Problem::invalid_parameter("title", "1 to 512 characters"));
    }
    let tenant = tenant.unwrap_or_else(|| auth.principal.tenant.clone());
    if tenant != auth.principal.tenant {
        return Err(Problem::new(
            ErrorCode::Forbidden,
            "documents can be written to your own tenant only",
        )
        .field("tenant")
        .reason("cross_tenant"));
    }
    let acl = acl.normalized();
    bounded_acl(&acl, acl_fields)?;
    if acl.groups.is_empty() && acl.users.is_empty() {
        return Err(Problem::invalid_parameter(
            "acl",
            "name at least one group or user who may read the document",
        ));
    }
    Ok((id, title, tenant, acl))
}

async fn store(
    state: &AppState,
    principal: &Principal,
    audit: &AuditCtx,
    doc: NewDocument,
) -> Result<HttpResponse, Problem> {
    let id = doc.id.clone();
    audit.0.borrow_mut().document_ids.push(id.clone());
    let outcome = state
        .documents
        .ingest(principal, doc)
        .await
        .map_err(Problem::from)?;
    let d = &outcome.document;
    audit.detail(
        "document",
        json!({"id": d.id, "version": d.version, "chunks": d.chunk_count, "unchanged": outcome.unchanged, "content_hash": d.content_hash}),
    );
    let body = written(&outcome);
    Ok(if outcome.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// `POST /v1/documents`: JSON, or multipart with a `file` part; a JSON array
/// or NDJSON writes many documents at once.
#[utoipa::path(
    post,
    path = "/v1/documents",
    tag = "documents",
    operation_id = "documents.create",
    summary = "Write a document (create, or replace every chunk of an existing id)",
    description = r#"Role ingester, own tenant only. JSON (text, or base64 content with content_type) or multipart/form-data with a `file` part and the fields id, title, tenant, acl_groups, acl_users (comma-separated) and metadata (a JSON object). Supported: text/plain, text/markdown, text/html, application/pdf, DOCX. The document is parsed and chunked before anything is stored; a failure stores nothing. Identical content under the same id is a no-op (`unchanged: true`). Searchable when the call returns. Audited with the document id, version and chunk count. Replacing an existing id needs the change rule (its writer, an ingester who may read it, or the tenant's admin); anyone else gets 404, as for an id nobody uses. Ids are unique within a tenant. Metadata (32 keys of letters, digits, '_' or '-'; values up to 512 characters; 8 KiB in all) and ACL lists (256 names of up to 128 characters; 16 KiB) are bounded: 413 naming the field.

Bulk: a JSON array of documents, or `application/x-ndjson` with one document per line (at most `ingest.max_bulk_documents`, `ingest.max_bulk_bytes` in all). Each document is checked and written as one unit on its own; their chunks are embedded together and they are committed together (one catalog transaction with a savepoint per document, one index commit). One that fails (a bad field, an unreadable file, no right to replace it) is reported in its place with its problem, and the rest are written: 207 with every document's outcome in request order. An id may come once per request."#,
    request_body(content((DocumentsJson = "application/json"), (DocumentJson = "application/x-ndjson"), (DocumentUpload = "multipart/form-data"))),
    responses(
        (status = 200, description = "replaced (version bumped) or unchanged", body = DocumentWritten),
        (status = 201, description = "created", body = DocumentWritten),
        (status = 207, description = "a bulk write: each document's outcome", body = BulkWritten),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "unsupported media type", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "the document could not be read", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    auth: Authorized<Ingest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let essence = req
        .mime_type()
        .ok()
        .flatten()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_default();
    let ingest = &state.settings.ingest;
    let one_limit = ingest.max_document_bytes * 4 / 3 + 64 * 1024;
    match essence.as_str() {
        "application/json" => {
            let limit = one_limit.max(ingest.max_bulk_bytes);
            let body = read_limited(payload, limit).await?;
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                let items: Vec<Value> = ValidJson::<Vec<Value>>::parse(&body)?.0;
                let items = items
                    .into_iter()
                    .map(|v| serde_path_to_error::deserialize(v).map_err(json_problem))
                    .collect();
                return create_bulk(auth, items, &state).await;
            }
            if body.len() > one_limit {
                return Err(Problem::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body exceeds ingest.max_document_bytes",
                ));
            }
            let json = ValidJson::<DocumentJson>::parse(&body)?.0;
            let doc = new_document(&auth, json, &state)?;
            store(&state, &auth.principal, &auth.audit, doc).await
        }
        "application/x-ndjson" => {
            let body = read_limited(payload, ingest.max_bulk_bytes).await?;
            let items = body[..]
                .split(|b| *b == b'\n')
                .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
                .map(|line| ValidJson::<DocumentJson>::parse(line).map(|j| j.0))
                .collect();
            create_bulk(auth, items, &state).await
        }
        "multipart/form-data" => {
            let multipart = Multipart::new(req.headers(), payload);
            create_multipart(auth, multipart, &state).await
        }
        _ => Err(Problem::new(
            ErrorCode::UnsupportedMediaType,
            "send application/json, application/x-ndjson or multipart/form-data",
        )
        .field("content-type")),
    }
}

async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, Problem> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            Problem::new(ErrorCode::InvalidJson, "the request body could not be read")
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Problem::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request body exceeds {limit} bytes (ingest.max_document_bytes, or ingest.max_bulk_bytes for several documents)"
                ),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON document's fields checked and turned into a write.
fn new_document(
    auth: &Authorized<Ingest>,
    j: DocumentJson,
    state: &AppState,
) -> Result<NewDocument, Problem> {
    let (id, title, tenant, acl) = prepare(
        auth,
        j.id,
        j.title,
        j.tenant,
        j.acl,
        ["acl.groups", "acl.users"],
    )?;
    let metadata = flat_metadata(j.metadata, "metadata")?;
    let (format, bytes) = match (j.text, j.content) {
        (Some(text), None) => (Format::Text, text.into_bytes()),
        (None, Some(content)) => {
            let ct = j.content_type.ok_or_else(|| {
                Problem::invalid_parameter("content_type", "required with content")
            })?;
            let format = Format::from_content_type(&ct)
                .map_err(|e| Problem::from(ServiceError::Ingest(e)))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(content.as_bytes())
                .map_err(|_| Problem::invalid_parameter("content", "not valid base64"))?;
            (format, bytes)
        }
        _ => {
            return Err(Problem::invalid_parameter(
                "text",
                "give exactly one of text or content",
            ));
        }
    };
    if bytes.len() > state.settings.ingest.max_document_bytes {
        return Err(Problem::new(
            ErrorCode::PayloadTooLarge,
            "the document exceeds ingest.max_document_bytes",
        ));
    }
    let source = match j.source {
        Some(s) if s.chars().count() > 1024 => {
            return Err(Problem::invalid_parameter(
                "source",
                "at most 1024 characters",
            ));
        }
        Some(s) => s,
        None => "api".into(),
    };
    Ok(NewDocument {
        id,
        tenant,
        title,
        source,
        format,
        bytes,
        acl,
        metadata,
        created_by: auth.principal.subject.clone(),
    })
}

/// One document's outcome in a bulk write.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkItem<'a> {
    /// Its position in the request (0-based; NDJSON: among the non-empty lines).
    pub index: usize,
    pub id: Option<&'a str>,
    /// What a single write of it would have answered: 201, 200, or the
    /// problem's status.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<&'a DocumentWritten>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<ProblemBody<'a>>,
}

/// What a bulk write did, document by document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkWritten<'a> {
    /// Created or replaced.
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub results: Vec<BulkItem<'a>>,
}

fn written(outcome: &sovra_documents::Outcome) -> DocumentWritten {
    let d = &outcome.document;
    DocumentWritten {
        id: d.id.clone(),
        version: d.version,
        chunks: d.chunk_count,
        unchanged: outcome.unchanged,
        created: outcome.created,
        content_hash: d.content_hash.clone(),
        title: d.title.clone(),
        tenant: d.tenant.clone(),
    }
}

/// A bulk item's id (when it had a valid one) and what became of it.
type BulkOutcome = (Option<String>, Result<DocumentWritten, Problem>);

/// Writes many documents at once (a JSON array or NDJSON): each is checked
/// and written on its own, and one that fails is reported in its place
/// without failing the rest. 207 with every document's outcome.
async fn create_bulk(
    auth: Authorized<Ingest>,
    items: Vec<Result<DocumentJson, Problem>>,
    state: &AppState,
) -> Result<HttpResponse, Problem> {
    let max = state.settings.ingest.max_bulk_documents;
    if items.is_empty() {
        return Err(Problem::invalid_parameter("body", "no documents"));
    }
    if items.len() > max {
        return Err(Problem::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {max} documents in one request (ingest.max_bulk_documents)"),
        )
        .field("body"));
    }
    // Each document's outcome, in request order.
    let mut outcomes: Vec<Option<BulkOutcome>> = Vec::with_capacity(items.len());
    let mut docs = Vec::new();
    let mut slots = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for item in items {
        let doc = item
            .and_then(|j| new_document(&auth, j, state))
            .and_then(|d| {
                if ids.insert(d.id.clone()) {
                    Ok(d)
                } else {
                    Err(Problem::invalid_parameter(
                        "id",
                        "the same id comes twice in this request",
                    ))
                }
            });
        match doc {
            Ok(d) => {
                auth.audit.0.borrow_mut().document_ids.push(d.id.clone());
                slots.push(outcomes.len());
                docs.push(d);
                outcomes.push(None);
            }
            Err(p) => outcomes.push(Some((None, Err(p)))),
        }
    }
    let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
    let written_docs = state.documents.ingest_many(&auth.principal, docs).await;
    let mut audited = Vec::with_capacity(written_docs.len());
    for ((slot, id), outcome) in slots.into_iter().zip(ids).zip(written_docs) {
        let outcome = match outcome {
            Ok(o) => {
                let d = &o.document;
                audited.push(json!({"id": d.id, "version": d.version, "chunks": d.chunk_count, "unchanged": o.unchanged, "content_hash": d.content_hash}));
                Ok(written(&o))
            }
            Err(e) => {
                let p = Problem::from(e);
                audited.push(json!({"id": id, "error": p.code_str()}));
                Err(p)
            }
        };
        if let Some(o) = outcomes.get_mut(slot) {
            *o = Some((Some(id), outcome));
        }
    }
    let results: Vec<BulkItem<'_>> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(index, o)| {
            let (id, outcome) = o.as_ref()?;
            Some(match outcome {
                Ok(d) => BulkItem {
                    index,
                    id: id.as_deref(),
                    status: if d.created { 201 } else { 200 },
                    document: Some(d),
                    problem: None,
                },
                Err(p) => {
                    let body = p.body();
                    BulkItem {
                        index,
                        id: id.as_deref(),
                        status: body.status,
                        document: None,
                        problem: Some(body),
                    }
                }
            })
        })
        .collect();
    let failed = results.iter().filter(|r| r.problem.is_some()).count();
    let unchanged = results
        .iter()
        .filter(|r| r.document.is_some_and(|d| d.unchanged))
        .count();
    auth.audit.detail("documents", Value::Array(audited));
    auth.audit.detail("failed", json!(failed));
    Ok(
        HttpResponse::build(actix_web::http::StatusCode::MULTI_STATUS).json(BulkWritten {
            written: results.len() - failed - unchanged,
            unchanged,
            failed,
            results,
        }),
    )
}

const FIELD_LIMIT: usize = 64 * 1024;

async fn create_multipart(
    auth: Authorized<Ingest>,
    mut mp: Multipart,
    state: &AppState,
) -> Result<HttpResponse, Problem> {
    let max = state.settings.ingest.max_document_bytes;
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut file: Option<(String, Option<String>, Vec<u8>)> = None;
    while let Some(part) = mp.next().await {
        let mut part = part.map_err(|e| Problem::invalid_parameter("multipart", e.to_string()))?;
        let name = part
            .content_disposition()
            .and_then(|cd| cd.get_name())
            .unwrap_or_default()
            .to_owned();
        let filename = part
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_owned);
        let ct = part.content_type().map(|m| m.essence_str().to_owned());
        let limit = if name == "file" { max } else { FIELD_LIMIT };
        let mut data = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk.map_err(|e| Problem::invalid_parameter(&name, e.to_string()))?;
            if data.len() + chunk.len() > limit {
                return Err(Problem::new(
                    ErrorCode::PayloadTooLarge,
                    format!("part `{name}` exceeds its limit ({limit} bytes)"),
                )
                .field(name));
            }
            data.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "file" => file = Some((filename.unwrap_or_else(|| "upload".into()), ct, data)),
            "id" | "title" | "tenant" | "acl_groups" | "acl_users" | "metadata" => {
                let v = String::from_utf8(data)
                    .map_err(|_| Problem::invalid_parameter(&name, "not UTF-8"))?;
                fields.insert(name, v);
            }
            other => return Err(Problem::invalid_parameter(other, "unknown form field")),
        }
    }
    let (filename, ct, bytes) =
        file.ok_or_else(|| Problem::invalid_parameter("file", "a `file` part is required"))?;
    let format = match ct.as_deref().filter(|c| *c != "application/octet-stream") {
        Some(c) => Format::from_content_type(c)
            .or_else(|_| Format::from_path(std::path::Path::new(&filename))),
        None => Format::from_path(std::path::Path::new(&filename)),
    }
    .map_err(|e| Problem::from(ServiceError::Ingest(e)))?;
    let list = |k: &str| -> Vec<String> {
        fields
            .get(k)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let acl = Acl {
        groups: list("acl_groups"),
        users: list("acl_users"),
    };
    let metadata: BTreeMap<String, Value> = match fields.get("metadata") {
        Some(m) => serde_json::from_str(m).map_err(|e| {
            Problem::invalid_parameter("metadata", format!("not a JSON object: {e}"))
        })?,
        None => BTreeMap::new(),
    };
    let title = fields
        .get("title")
        .cloned()
        .unwrap_or_else(|| filename.clone());
    let (id, title, tenant, acl) = prepare(
        &auth,
        fields.get("id").cloned(),
        title,
        fields.get("tenant").cloned(),
        acl,
        ["acl_groups", "acl_users"],
    )?;
    let doc = NewDocument {
        id,
        tenant,
        title,
        source: filename,
        format,
        bytes,
        acl,
        metadata: flat_metadata(metadata, "metadata")?,
        created_by: auth.principal.subject.clone(),
    };
    store(state, &auth.principal, &auth.audit, doc).await
}

/// `GET /v1/documents`: documents the caller may see; `metadata.KEY=VALUE` filters.
#[utoipa::path(
    get,
    path = "/v1/documents",
    tag = "documents",
    operation_id = "documents.list",
    summary = "List the documents the caller may see",
    description = r#"Roles reader and ingester; own tenant; ACL applied in SQL. Filters: metadata.KEY=VALUE (repeatable)."#,
    params(("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "default 50"), ("tenant" = Option<String>, Query, description = "must be the caller's own"), ("metadata.KEY" = Option<String>, Query, description = "exact match on a metadata value")),
    responses(
        (status = 200, description = "one page", body = sovra_catalog::DocumentPage),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    req: HttpRequest,
    auth: Authorized<Browse>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let mut filter = ListFilter {
        limit: 50,
        ..Default::default()
    };
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "cursor" => filter.cursor = Some(v.into_owned()),
            "limit" => {
                filter.limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| {
                        Problem::invalid_parameter("limit", "must be between 1 and 1000")
                    })?;
            }
            "tenant" if v != auth.principal.tenant => {
                return Err(Problem::new(
                    ErrorCode::Forbidden,
                    "you can list your own tenant's documents only",
                )
                .field("tenant"));
            }
            "tenant" => {}
            key => match key.strip_prefix("metadata.") {
                Some(mk) if !mk.is_empty() => {
                    filter.metadata.insert(mk.to_owned(), v.into_owned());
                }
                _ => {
                    return Err(Problem::invalid_parameter(
                        key,
                        "unknown parameter (use cursor, limit, tenant or metadata.KEY)",
                    ));
                }
            },
        }
    }
    let page = state
        .documents
        .catalog()
        .list(&auth.principal.scope(), &filter)
        .await
        .map_err(Problem::from)?;
    auth.audit.detail("listed", json!(page.documents.len()));
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /v1/documents/{id}`.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    tag = "documents",
    operation_id = "documents.get",
    summary = "One document's catalog entry",
    description = r#"Roles reader and ingester; 404 unless the caller may see it."#,
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "the document", body = sovra_catalog::Document),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    id: web::Path<String>,
    auth: Authorized<Browse>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    valid_id(&id)?;
    auth.audit.0.borrow_mut().document_ids.push(id.to_string());
    let doc = state
        .documents
        .catalog()
        .get(&auth.principal.scope(), &id)
        .await
        .map_err(Problem::from)?;
    match doc {
        Some(d) => Ok(HttpResponse::Ok().json(d)),
        None => Err(Problem::new(
            ErrorCode::NotFound,
            "no document with that id is visible to you",
        )),
    }
}

/// `DELETE /v1/documents/{id}`: from the catalog and every index.
#[utoipa::path(
    delete,
    path = "/v1/documents/{id}",
    tag = "documents",
    operation_id = "documents.delete",
    summary = "Remove a document from the catalog and every index",
    description = r#"Role ingester; 404 unless the caller may see it. Audited with the id, version and chunk count."#,
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "invalid parameter or body (the field is named)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "the caller's roles do not allow it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not found, or not visible to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "the audit store (or the database) does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn delete(
    id: web::Path<String>,
    auth: Authorized<Ingest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    valid_id(&id)?;
    auth.audit.0.borrow_mut().document_ids.push(id.to_string());
    match state
        .documents
        .delete(&auth.principal, &id)
        .await
        .map_err(Problem::from)?
    {
        Some(d) => {
            auth.audit.detail(
                "document",
                json!({"id": d.id, "version": d.version, "chunks": d.chunk_count, "deleted": true}),
            );
            Ok(HttpResponse::NoContent().finish())
        }
        None => Err(Problem::new(
            ErrorCode::NotFound,
            "no document with that id is visible to you",
        )),
    }
}
