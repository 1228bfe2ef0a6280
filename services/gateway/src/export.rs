//! Audit export formats, shared by the API and the CLI.

use sovra_audit::AuditRecord;

/// A cell a spreadsheet would run as a formula (`= + - @`, tab or carriage
/// return first) gets a leading `'`, as OWASP advises: an audit export is
/// opened by people, and its cells carry what callers sent.
fn cell(value: String) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value
    }
}

/// One CSV line per record; lists joined with `;`, details as JSON.
pub fn csv_rows(records: &[AuditRecord], header: bool) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        let _ = w.write_record([
            "seq",
            "id",
            "ts",
            "request_id",
            "trace_id",
            "subject",
            "tenant",
            "roles",
            "client_addr",
            "method",
            "route",
            "action",
            "status",
            "latency_us",
            "reason",
            "document_ids",
            "details",
            "prev_hash",
            "hash",
        ]);
    }
    for r in records {
        let e = &r.event;
        let _ = w.write_record(
            [
                r.seq.to_string(),
                e.id.to_string(),
                r.ts.clone(),
                e.request_id.clone(),
                e.trace_id.clone(),
                e.subject.clone().unwrap_or_default(),
                e.tenant.clone().unwrap_or_default(),
                e.roles.join(";"),
                e.client_addr.clone().unwrap_or_default(),
                e.method.clone(),
                e.route.clone(),
                e.action.clone(),
                e.status.to_string(),
                e.latency_us.to_string(),
                e.reason.clone().unwrap_or_default(),
                e.document_ids.join(";"),
                e.details.to_string(),
                r.prev_hash.clone(),
                r.hash.clone(),
            ]
            .map(cell),
        );
    }
    w.into_inner().unwrap_or_default()
}

pub fn jsonl_rows(records: &[AuditRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        if serde_json::to_writer(&mut out, r).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formula_cells_are_defused() {
        for bad in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(cell(bad.into()), format!("'{bad}"));
        }
        for good in ["query", "1.5", "", "a=b"] {
            assert_eq!(cell(good.into()), good);
        }
    }
}
