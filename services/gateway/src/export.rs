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

/// Why a page of records could not be written: the export stops there
/// rather than leave a record out.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("a CSV row could not be written: {0}")]
    Csv(#[from] csv::Error),
    #[error("a CSV page could not be finished: {0}")]
    Flush(#[source] std::io::Error),
    #[error("a record could not be encoded: {0}")]
    Json(#[from] serde_json::Error),
}

/// One CSV line per record; lists joined with `;`, details as JSON.
pub fn csv_rows(records: &[AuditRecord], header: bool) -> Result<Vec<u8>, ExportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        w.write_record([
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
        ])?;
    }
    for r in records {
        let e = &r.event;
        w.write_record(
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
        )?;
    }
    w.into_inner()
        .map_err(|e| ExportError::Flush(e.into_error()))
}

/// One JSON object per line.
pub fn jsonl_rows(records: &[AuditRecord]) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{cell, csv_rows, jsonl_rows};
    use sovra_audit::{AuditEvent, AuditRecord};

    #[test]
    fn every_record_is_written_or_the_page_fails() -> Result<(), super::ExportError> {
        let record = |seq| AuditRecord {
            seq,
            event: AuditEvent::new("r", "GET", "/v1/whoami"),
            ts: "2026-11-30T00:00:00Z".into(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let records = [record(1), record(2)];
        let csv = String::from_utf8_lossy(&csv_rows(&records, true)?).into_owned();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        assert!(csv.starts_with("seq,id,ts,"));
        let jsonl = jsonl_rows(&records)?;
        assert_eq!(jsonl.iter().filter(|&&b| b == b'\n').count(), 2);
        Ok(())
    }

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
