//! The chain's canonical encoding and hash.
//!
//! `hash = SHA-256(prev_hash_bytes || canonical_json(record))`, where the
//! canonical JSON is the record's fields in a fixed order (object keys inside
//! `details` sorted), without `prev_hash` and `hash`, prefixed by a version.
//! The first record's `prev_hash` is 32 zero bytes ([`GENESIS`]).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AuditEvent;

/// `prev_hash` of the first record, in hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    seq: i64,
    id: String,
    ts_us: i64,
    request_id: &'a str,
    trace_id: &'a str,
    subject: &'a Option<String>,
    tenant: &'a Option<String>,
    roles: &'a [String],
    client_addr: &'a Option<String>,
    method: &'a str,
    route: &'a str,
    action: &'a str,
    status: i64,
    latency_us: i64,
    reason: &'a Option<String>,
    document_ids: &'a [String],
    details: &'a serde_json::Value,
}

/// `v` with every object's keys in sorted order, whatever serde_json's map
/// type preserves (another crate may turn on its `preserve_order`).
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The bytes that are hashed for a record at `seq`.
pub fn canonical_bytes(seq: i64, e: &AuditEvent) -> Result<Vec<u8>, serde_json::Error> {
    let details = sorted(&e.details);
    let c = Canonical {
        v: 1,
        seq,
        id: e.id.to_string(),
        ts_us: e.ts_us,
        request_id: &e.request_id,
        trace_id: &e.trace_id,
        subject: &e.subject,
        tenant: &e.tenant,
        roles: &e.roles,
        client_addr: &e.client_addr,
        method: &e.method,
        route: &e.route,
        action: &e.action,
        status: e.status,
        latency_us: e.latency_us,
        reason: &e.reason,
        document_ids: &e.document_ids,
        details: &details,
    };
    serde_json::to_vec(&c)
}

/// The hash of a record at `seq` following `prev_hash` (hex), in hex. A
/// record that cannot be encoded has no hash: the error says why, and no
/// empty encoding is ever hashed in its place.
pub fn link_hash(prev_hash: &str, seq: i64, e: &AuditEvent) -> Result<String, serde_json::Error> {
    let mut h = Sha256::new();
    match hex::decode(prev_hash) {
        Ok(bytes) => h.update(bytes),
        // A stored prev_hash that is not hex (tampering) is hashed as its
        // text: verification then reports the broken link.
        Err(_) => h.update(prev_hash.as_bytes()),
    }
    h.update(canonical_bytes(seq, e)?);
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(prev: &str, seq: i64, e: &AuditEvent) -> String {
        link_hash(prev, seq, e).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn hash_depends_on_every_field_and_prev() {
        let e = AuditEvent::new("r1", "GET", "/v1/whoami");
        let h = link(GENESIS, 1, &e);
        assert_eq!(h.len(), 64);
        assert_eq!(h, link(GENESIS, 1, &e));
        assert_ne!(h, link(GENESIS, 2, &e));
        assert_ne!(h, link(&h, 1, &e));
        let mut e2 = e.clone();
        e2.status = 500;
        assert_ne!(h, link(GENESIS, 1, &e2));
        let mut e3 = e.clone();
        e3.details = serde_json::json!({"b": 1, "a": 2});
        let mut e4 = e.clone();
        e4.details = serde_json::from_str(r#"{"a":2,"b":1}"#).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(link(GENESIS, 1, &e3), link(GENESIS, 1, &e4));
    }
}
