//! The SQL store behind the audit trail, for PostgreSQL and SQLite alike
//! (through sqlx's `Any` driver; both dialects accept `$N` parameters).

use serde::Serialize;
use sovra_storage::{Backend, Database};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::chain::{GENESIS, link_hash};
use crate::checkpoint::{CheckpointKey, CheckpointVerifier};
use crate::record::rfc3339;
use crate::{AuditError, AuditEvent, AuditReceipt, AuditRecord, EventFilter, Page};

/// Key of the transaction-scoped advisory lock that serialises chain appends
/// across every gateway replica sharing one PostgreSQL database.
const PG_CHAIN_LOCK: i64 = 0x50AA_4D17;

/// Rows per multi-row INSERT (19 parameters each, well under both limits).
const INSERT_CHUNK: usize = 50;

const COLUMNS: &str = "seq, id, ts_us, request_id, trace_id, subject, tenant, roles, client_addr, method, route, action, status, latency_us, reason, document_ids, details, prev_hash, hash";

/// The audit trail's database.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    /// Records whose links were checked.
    pub checked: u64,
    /// The last record checked (or the anchoring checkpoint when none remain).
    pub head_seq: i64,
    pub head_hash: String,
    /// The checkpoint the remaining chain starts from, if records were pruned.
    pub anchored_at_checkpoint: Option<i64>,
    pub first_broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub id: String,
    pub problem: String,
}

/// What `prune_before` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PruneReport {
    pub pruned: u64,
    pub checkpoint_seq: Option<i64>,
    pub checkpoint_hash: Option<String>,
}

/// A parameter of a dynamically built statement.
enum Arg {
    I64(i64),
    Text(String),
    OptText(Option<String>),
}

/// Builds SQL with `$N` placeholders in order.
#[derive(Default)]
struct SqlBuf {
    text: String,
    args: Vec<Arg>,
}

impl SqlBuf {
    fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }
    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    fn bind(&mut self, a: Arg) -> &mut Self {
        self.args.push(a);
        self.text.push_str(&format!("${}", self.args.len()));
        self
    }
    fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.clone()));
        for a in &self.args {
            q = match a {
                Arg::I64(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
                Arg::OptText(v) => q.bind(v.clone()),
            };
        }
        q
    }
}

impl SqlStore {
    /// The audit trail in `db` (its migrations applied by `Database::migrate`).
    pub fn new(db: Database) -> Self {
        Self {
            backend: db.backend(),
            pool: db.pool().clone(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn begin_append(&self) -> Result<Transaction<'static, Any>, AuditError> {
        Ok(match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                    .bind(PG_CHAIN_LOCK)
                    .fetch_one(&mut *tx)
                    .await?;
                tx
            }
            // One writer at a time for the whole file: take the write lock now.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    async fn head(tx: &mut Transaction<'static, Any>) -> Result<(i64, String), AuditError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
        let row = match row {
            Some(r) => Some(r),
            None => {
                sqlx::query("SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        Ok(match row {
            Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
            None => (0, GENESIS.to_owned()),
        })
    }

    /// Appends events in order, in one transaction, extending the chain.
    pub async fn append_batch(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditReceipt>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_append().await?;
        let (mut seq, mut prev) = Self::head(&mut tx).await?;
        let mut receipts = Vec::with_capacity(events.len());
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut sql = SqlBuf::new(&format!("INSERT INTO audit_events ({COLUMNS}) VALUES "));
            let mut docs =
                SqlBuf::new("INSERT INTO audit_event_documents (seq, document_id) VALUES ");
            let mut any_docs = false;
            for (i, e) in chunk.iter().enumerate() {
                seq += 1;
                let hash = link_hash(&prev, seq, e)?;
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(");
                for (j, arg) in row_args(seq, e, &prev, &hash)?.into_iter().enumerate() {
                    if j > 0 {
                        sql.push(", ");
                    }
                    sql.bind(arg);
                }
                sql.push(")");
                let mut ids = e.document_ids.clone();
                ids.sort();
                ids.dedup();
                for d in ids {
                    if any_docs {
                        docs.push(", ");
                    }
                    any_docs = true;
                    docs.push("(")
                        .bind(Arg::I64(seq))
                        .push(", ")
                        .bind(Arg::Text(d))
                        .push(")");
                }
                receipts.push(AuditReceipt {
                    seq,
                    hash: hash.clone(),
                });
                prev = hash;
            }
            sql.query().execute(&mut *tx).await?;
            if any_docs {
                docs.query().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(receipts)
    }

    /// One record by its id.
    pub async fn get(&self, id: &str) -> Result<Option<AuditRecord>, AuditError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_events WHERE id = $1"
        )))
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| record_from_row(&r)).transpose()
    }

    fn filtered(filter: &EventFilter) -> SqlBuf {
        let mut sql = SqlBuf::new(&format!("SELECT {COLUMNS} FROM audit_events WHERE 1 = 1"));
        if let Some(v) = filter.since_us {
            sql.push(" AND ts_us >= ").bind(Arg::I64(v));
        }
        if let Some(v) = filter.until_us {
            sql.push(" AND ts_us < ").bind(Arg::I64(v));
        }
        if let Some(v) = &filter.subject {
            sql.push(" AND subject = ").bind(Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.tenant {
            sql.push(" AND tenant = ").bind(Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.action {
            sql.push(" AND action = ").bind(Arg::Text(v.clone()));
        }
        if let Some(v) = filter.status {
            sql.push(" AND status = ").bind(Arg::I64(v));
        }
        if let Some(v) = &filter.request_id {
            sql.push(" AND request_id = ").bind(Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.document_id {
            sql.push(" AND seq IN (SELECT seq FROM audit_event_documents WHERE document_id = ")
                .bind(Arg::Text(v.clone()))
                .push(")");
        }
        sql
    }

    /// Newest first; `cursor` is the `next_cursor` of the previous page.
    pub async fn query(
        &self,
        filter: &EventFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page, AuditError> {
        let mut sql = Self::filtered(filter);
        if let Some(c) = cursor {
            let before: i64 = c.parse().map_err(|_| AuditError::InvalidQuery {
                field: "cursor",
                message: "not a cursor returned by this API".into(),
            })?;
            sql.push(" AND seq < ").bind(Arg::I64(before));
        }
        let limit = i64::from(limit.clamp(1, 1000));
        sql.push(" ORDER BY seq DESC LIMIT ")
            .bind(Arg::I64(limit + 1));
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut events = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if events.len() as i64 > limit {
            events.truncate(limit as usize);
            events.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(Page {
            events,
            next_cursor,
        })
    }

    /// Oldest first, after `after_seq`; used to stream exports page by page.
    pub async fn export_page(
        &self,
        filter: &EventFilter,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut sql = Self::filtered(filter);
        sql.push(" AND seq > ").bind(Arg::I64(after_seq));
        sql.push(" ORDER BY seq ASC LIMIT ")
            .bind(Arg::I64(i64::from(limit.max(1))));
        let rows = sql.query().fetch_all(&self.pool).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Walks the whole chain and reports the first broken link.
    ///
    /// Checkpoints must carry a valid signature under `key`; the chain may
    /// start at seq 1 (genesis) or right after a valid checkpoint.
    pub async fn verify(
        &self,
        key: Option<&CheckpointVerifier>,
    ) -> Result<VerifyReport, AuditError> {
        let cps = sqlx::query(
            "SELECT seq, hash, ts_us, signature FROM audit_checkpoints ORDER BY seq ASC",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut checkpoints = Vec::with_capacity(cps.len());
        for r in &cps {
            let seq: i64 = r.try_get("seq")?;
            let hash: String = r.try_get("hash")?;
            let ts_us: i64 = r.try_get("ts_us")?;
            let sig: String = r.try_get("signature")?;
            let valid = key.is_some_and(|k| k.verify(seq, &hash, ts_us, &sig));
            if !valid {
                let problem = match key {
                    None => "a checkpoint exists but no checkpoint public key is configured to verify it"
                        .to_owned(),
                    Some(_) => {
                        "checkpoint signature does not verify under the configured key".to_owned()
                    }
                };
                return Ok(broken_report(
                    0,
                    seq,
                    GENESIS,
                    format!("checkpoint:{seq}"),
                    problem,
                    None,
                ));
            }
            checkpoints.push((seq, hash));
        }
        let mut report = VerifyReport {
            ok: true,
            checked: 0,
            head_seq: 0,
            head_hash: GENESIS.to_owned(),
            anchored_at_checkpoint: None,
            first_broken: None,
        };
        let mut expected_seq: Option<i64> = None;
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq ASC LIMIT 1000"
            )))
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                let id: String = row.try_get("id").unwrap_or_default();
                let rec = match record_from_row(row) {
                    Ok(r) => r,
                    Err(e) => {
                        return Ok(broken(report, seq, id, e.to_string()));
                    }
                };
                let expected_prev = match expected_seq {
                    None => {
                        // The first remaining record: genesis, or right after a checkpoint.
                        if seq == 1 {
                            GENESIS.to_owned()
                        } else if let Some((cs, ch)) =
                            checkpoints.iter().find(|(cs, _)| *cs == seq - 1)
                        {
                            report.anchored_at_checkpoint = Some(*cs);
                            ch.clone()
                        } else {
                            return Ok(broken(
                                report,
                                seq,
                                id,
                                format!(
                                    "records before seq {seq} are missing and no signed checkpoint covers them"
                                ),
                            ));
                        }
                    }
                    Some(exp) if exp != seq => {
                        return Ok(broken(
                            report,
                            seq,
                            id,
                            format!("expected seq {exp}, found {seq}: records are missing"),
                        ));
                    }
                    Some(_) => report.head_hash.clone(),
                };
                if rec.prev_hash != expected_prev {
                    return Ok(broken(
                        report,
                        seq,
                        id,
                        "prev_hash does not match the previous record's hash".into(),
                    ));
                }
                let recomputed = match link_hash(&rec.prev_hash, seq, &rec.event) {
                    Ok(h) => h,
                    Err(e) => {
                        return Ok(broken(report, seq, id, format!("cannot be encoded: {e}")));
                    }
                };
                if recomputed != rec.hash {
                    return Ok(broken(
                        report,
                        seq,
                        id,
                        "hash does not match the record's contents".into(),
                    ));
                }
                if let Some((_, ch)) = checkpoints.iter().find(|(cs, _)| *cs == seq)
                    && *ch != rec.hash
                {
                    return Ok(broken(
                        report,
                        seq,
                        id,
                        "record differs from the signed checkpoint at this seq".into(),
                    ));
                }
                report.checked += 1;
                report.head_seq = seq;
                report.head_hash = rec.hash;
                expected_seq = Some(seq + 1);
                after = seq;
            }
        }
        if report.checked == 0 {
            if let Some((cs, ch)) = checkpoints.last() {
                report.head_seq = *cs;
                report.head_hash = ch.clone();
                report.anchored_at_checkpoint = Some(*cs);
            }
        } else if let Some((cs, _)) = checkpoints.last()
            && *cs > report.head_seq
        {
            return Ok(broken(
                report.clone(),
                report.head_seq,
                String::new(),
                format!(
                    "a signed checkpoint at seq {cs} lies beyond the last record: records were removed from the end"
                ),
            ));
        }
        Ok(report)
    }

    /// Signs a checkpoint at the last record older than `before_us`, then
    /// deletes every record up to it. Verification starts from the checkpoint.
    pub async fn prune_before(
        &self,
        before_us: i64,
        key: &CheckpointKey,
    ) -> Result<PruneReport, AuditError> {
        let mut tx = self.begin_append().await?;
        let row = sqlx::query(
            "SELECT seq, hash, ts_us FROM audit_events WHERE ts_us < $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(before_us)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(PruneReport {
                pruned: 0,
                checkpoint_seq: None,
                checkpoint_hash: None,
            });
        };
        let seq: i64 = row.try_get("seq")?;
        let hash: String = row.try_get("hash")?;
        let ts_us: i64 = row.try_get("ts_us")?;
        let signature = key.sign(seq, &hash, ts_us);
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, ts_us, created_us, public_key, signature) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seq)
        .bind(hash.clone())
        .bind(ts_us)
        .bind(chrono::Utc::now().timestamp_micros())
        .bind(key.public_hex())
        .bind(signature)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM audit_event_documents WHERE seq <= $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let pruned = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(PruneReport {
            pruned,
            checkpoint_seq: Some(seq),
            checkpoint_hash: Some(hash),
        })
    }
}

fn broken(mut report: VerifyReport, seq: i64, id: String, problem: String) -> VerifyReport {
    report.ok = false;
    report.first_broken = Some(BrokenLink { seq, id, problem });
    report
}

fn broken_report(
    checked: u64,
    seq: i64,
    head: &str,
    id: String,
    problem: String,
    anchored: Option<i64>,
) -> VerifyReport {
    VerifyReport {
        ok: false,
        checked,
        head_seq: 0,
        head_hash: head.to_owned(),
        anchored_at_checkpoint: anchored,
        first_broken: Some(BrokenLink { seq, id, problem }),
    }
}

fn row_args(seq: i64, e: &AuditEvent, prev: &str, hash: &str) -> Result<Vec<Arg>, AuditError> {
    let opt = |v: &Option<String>| Arg::OptText(v.clone());
    Ok(vec![
        Arg::I64(seq),
        Arg::Text(e.id.to_string()),
        Arg::I64(e.ts_us),
        Arg::Text(e.request_id.clone()),
        Arg::Text(e.trace_id.clone()),
        opt(&e.subject),
        opt(&e.tenant),
        Arg::Text(serde_json::to_string(&e.roles)?),
        opt(&e.client_addr),
        Arg::Text(e.method.clone()),
        Arg::Text(e.route.clone()),
        Arg::Text(e.action.clone()),
        Arg::I64(e.status),
        Arg::I64(e.latency_us),
        opt(&e.reason),
        Arg::Text(serde_json::to_string(&e.document_ids)?),
        Arg::Text(serde_json::to_string(&e.details)?),
        Arg::Text(prev.to_owned()),
        Arg::Text(hash.to_owned()),
    ])
}

fn record_from_row(r: &AnyRow) -> Result<AuditRecord, AuditError> {
    let seq: i64 = r.try_get("seq")?;
    let corrupt = |message: String| AuditError::CorruptRow { seq, message };
    let text = |name: &str| -> Result<String, AuditError> { Ok(r.try_get::<String, _>(name)?) };
    let opt = |name: &str| -> Result<Option<String>, AuditError> {
        Ok(r.try_get::<Option<String>, _>(name)?)
    };
    let id = text("id")?;
    let ts_us: i64 = r.try_get("ts_us")?;
    let event = AuditEvent {
        id: id
            .parse()
            .map_err(|_| corrupt(format!("id `{id}` is not a UUID")))?,
        ts_us,
        request_id: text("request_id")?,
        trace_id: text("trace_id")?,
        subject: opt("subject")?,
        tenant: opt("tenant")?,
        roles: serde_json::from_str(&text("roles")?).map_err(|e| corrupt(format!("roles: {e}")))?,
        client_addr: opt("client_addr")?,
        method: text("method")?,
        route: text("route")?,
        action: text("action")?,
        status: r.try_get("status")?,
        latency_us: r.try_get("latency_us")?,
        reason: opt("reason")?,
        document_ids: serde_json::from_str(&text("document_ids")?)
            .map_err(|e| corrupt(format!("document_ids: {e}")))?,
        details: serde_json::from_str(&text("details")?)
            .map_err(|e| corrupt(format!("details: {e}")))?,
    };
    Ok(AuditRecord {
        seq,
        ts: rfc3339(ts_us),
        event,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}
