//! Two gateways on one PostgreSQL catalog, each with its own Tantivy index
//! and, unless `QDRANT_URL` names a Qdrant server they then share, its own
//! qdrant-edge store: what one replica serves is checked against the
//! catalog, so a change made through the other is never undone by a lagging
//! index.

use serde_json::{Value, json};

use crate::support::*;

async fn search(s: &Server, token: &str, q: &str, mode: &str) -> Vec<Value> {
    search_hits(s, token, q, mode).await
}

async fn write(s: &Server, token: &str, text: &str, groups: &[&str]) -> u16 {
    s.client
        .post(s.url("/v1/documents"))
        .bearer_auth(token)
        .json(
            &json!({"id": "memo", "title": "Bonus memo", "text": text, "acl": {"groups": groups}}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A replica's options: on PostgreSQL, and, when `QDRANT_URL` is set, on
/// one Qdrant collection shared by both replicas of a test (else each
/// replica's own qdrant-edge store, fed by the change sequence; a notice
/// says so).
fn replica(collection: &str, follow: bool) -> Options {
    let mut env = Vec::new();
    if !follow {
        env.push(("SOVRA__REPLICATION__FOLLOW".into(), "false".into()));
    }
    match std::env::var("QDRANT_URL") {
        Ok(url) => env.extend([
            ("SOVRA__VECTORS__BACKEND".into(), "qdrant".into()),
            ("SOVRA__VECTORS__URL".into(), url),
            ("SOVRA__VECTORS__COLLECTION".into(), collection.into()),
        ]),
        Err(_) => {
            eprintln!("NOTICE: QDRANT_URL is not set; each replica runs its own qdrant-edge store")
        }
    }
    Options {
        env,
        ..Options::new(Db::Postgres)
    }
}

fn collection() -> String {
    format!("sovra_replicas_{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn a_lagging_replica_serves_neither_revoked_nor_replaced_text() {
    let pg = pg_fresh().await;
    let shared = collection();
    let a = Server::start_with(replica(&shared, true), Some(pg.url.clone())).await;
    let ing = hs256(&claims("ann", "bank", &["ingester"], &["board"]));
    let staff = hs256(&claims("sam", "bank", &["reader"], &["staff"]));
    let board = hs256(&claims("bea", "bank", &["reader"], &["board"]));
    assert_eq!(
        write(
            &a,
            &ing,
            "the quarterly bonus pool is four percent",
            &["board", "staff"]
        )
        .await,
        201
    );
    // B starts after the write: reconciliation puts the memo, readable by
    // board and staff, into B's own indexes. B does not follow the change
    // sequence: its indexes lag, as any replica's can, and only the check
    // against the catalog stands between them and the caller.
    let b = Server::start_with(replica(&shared, false), Some(pg.url.clone())).await;
    for mode in ["lexical", "dense", "hybrid"] {
        assert_eq!(
            search(&b, &staff, "quarterly bonus pool", mode).await.len(),
            1,
            "{mode}"
        );
    }

    // Through A the ACL narrows to the board; B's indexes still say staff.
    assert_eq!(
        write(
            &a,
            &ing,
            "the quarterly bonus pool is four percent",
            &["board"]
        )
        .await,
        200
    );
    for mode in ["lexical", "dense", "hybrid"] {
        assert!(
            search(&b, &staff, "quarterly bonus pool", mode)
                .await
                .is_empty(),
            "revoked, {mode}"
        );
        assert_eq!(
            search(&b, &board, "quarterly bonus pool", mode).await.len(),
            1,
            "{mode}"
        );
    }
    let r = b
        .client
        .post(b.url("/v1/query"))
        .bearer_auth(&staff)
        .json(&json!({"question": "what is the quarterly bonus pool"}))
        .send()
        .await
        .unwrap();
    let body = json(r).await;
    assert_eq!(body["sources"], json!([]), "{body}");
    assert!(!body.to_string().contains("four percent"), "{body}");

    // Through A the text changes, chunk count the same; B's indexes still
    // hold the old text, which must not be served.
    assert_eq!(
        write(
            &a,
            &ing,
            "the quarterly bonus pool is two percent",
            &["board"]
        )
        .await,
        200
    );
    for mode in ["lexical", "dense", "hybrid"] {
        let hits = search(&b, &board, "quarterly bonus pool", mode).await;
        assert!(
            hits.iter().all(|h| !h.to_string().contains("four percent")),
            "stale text served, {mode}: {hits:?}"
        );
    }
    drop(b);
    drop(a);
    pg.drop_db().await;
}

/// Polls `check` until it holds, for at most `bound`; returns how long it took.
async fn within<F, Fut>(bound: std::time::Duration, what: &str, mut check: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed().as_secs_f64();
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Each replica follows the catalog's change sequence into its own indexes
/// (Tantivy and qdrant-edge), woken by PostgreSQL notifications: a change
/// on one is searchable, and a revocation effective, on the other within
/// 2 s; a restarted replica resumes from the last change it applied.
#[tokio::test]
async fn changes_on_one_replica_reach_the_other_within_two_seconds() {
    let pg = pg_fresh().await;
    let shared = collection();
    let a = Server::start_with(replica(&shared, true), Some(pg.url.clone())).await;
    let mut b = Server::start_with(replica(&shared, true), Some(pg.url.clone())).await;
    let ing = hs256(&claims("ann", "bank", &["ingester"], &["board"]));
    let staff = hs256(&claims("sam", "bank", &["reader"], &["staff"]));
    let board = hs256(&claims("bea", "bank", &["reader"], &["board"]));
    let bound = std::time::Duration::from_secs(2);
    let mut lags = Vec::new();

    // Written on A, found on B in every mode.
    assert_eq!(
        write(
            &a,
            &ing,
            "the quarterly bonus pool is four percent",
            &["board", "staff"]
        )
        .await,
        201
    );
    for mode in ["lexical", "dense"] {
        lags.push(
            within(bound, &format!("new document on B, {mode}"), || async {
                search(&b, &staff, "quarterly bonus pool", mode).await.len() == 1
            })
            .await,
        );
    }
    // Narrowed on B, gone for staff on A (its own indexes updated too).
    assert_eq!(
        write(
            &b,
            &ing,
            "the quarterly bonus pool is four percent",
            &["board"]
        )
        .await,
        200
    );
    lags.push(
        within(bound, "revocation on A", || async {
            search(&a, &staff, "quarterly bonus pool", "lexical")
                .await
                .is_empty()
        })
        .await,
    );
    // Replaced on A: B's own indexes serve the new text, found by its words.
    assert_eq!(
        write(
            &a,
            &ing,
            "the quarterly bonus pool is two percent",
            &["board"]
        )
        .await,
        200
    );
    lags.push(
        within(bound, "replacement on B", || async {
            snippets(&search(&b, &board, "two percent", "lexical").await)
                .iter()
                .any(|t| t.contains("two percent"))
        })
        .await,
    );
    // B restarts and resumes; a delete on A reaches it.
    b.restart().await;
    assert_eq!(
        a.client
            .delete(a.url("/v1/documents/memo"))
            .bearer_auth(&ing)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    lags.push(
        within(bound, "delete on B after its restart", || async {
            let m = b.get("/metrics", None).await.text().await.unwrap();
            search(&b, &board, "quarterly bonus pool", "dense")
                .await
                .is_empty()
                && m.contains("sovra_replication_applied_seq")
        })
        .await,
    );
    let metrics = b.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("sovra_replication_lag_seconds_count"),
        "{metrics}"
    );
    lags.sort_by(f64::total_cmp);
    println!(
        "replication: {} changes seen on the other replica after {:.3}/{:.3}/{:.3} s (min/median/max)",
        lags.len(),
        lags[0],
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    drop(b);
    drop(a);
    pg.drop_db().await;
}

/// Two replicas append to one audit chain under load; one is killed with
/// SIGKILL mid-way. Every request either of them answered is in the chain,
/// and the chain, written by both, verifies.
#[tokio::test]
async fn two_replicas_under_load_share_one_chain_and_a_sigkill_loses_no_answered_record() {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    let pg = pg_fresh().await;
    let shared = collection();
    let mut a = Server::start_with(replica(&shared, true), Some(pg.url.clone())).await;
    let b = Server::start_with(replica(&shared, true), Some(pg.url.clone())).await;
    let stop = Arc::new(AtomicBool::new(false));
    let killer = crate::crash::sigkill_later(a.pid(), stop.clone(), Duration::from_millis(500));
    let (on_a, on_b) = tokio::join!(
        crate::crash::load(&a, stop.clone(), 4),
        crate::crash::load(&b, stop.clone(), 4)
    );
    killer.await.unwrap();
    assert!(
        on_a.len() > 10 && on_b.len() > 10,
        "{} / {} answered",
        on_a.len(),
        on_b.len()
    );
    let report = b.verify_ok();
    let records = b.audit_records();
    let recorded: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    let missing: Vec<&String> = on_a
        .iter()
        .chain(on_b.iter())
        .filter(|rid| !recorded.contains(rid.as_str()))
        .collect();
    assert!(missing.is_empty(), "answered but not recorded: {missing:?}");
    // A restarts and extends the same chain.
    a.restart().await;
    a.get("/v1/whoami", Some(&token(&["reader"]))).await;
    let after = b.verify_ok();
    assert!(after["head_seq"].as_i64() > report["head_seq"].as_i64());
    eprintln!(
        "two replicas: {} + {} answered ({} before A's SIGKILL), {} records, one chain verified",
        on_a.len(),
        on_b.len(),
        on_a.len(),
        records.len()
    );
    drop(a);
    drop(b);
    pg.drop_db().await;
}

/// Reconciliation compares versions, not only chunk counts: an ACL-only
/// change (same text, same count) that a replica missed while it did not
/// follow is repaired in its indexes at its next start.
#[tokio::test]
async fn reconciliation_repairs_a_missed_acl_change_by_version() {
    let pg = pg_fresh().await;
    let shared = collection();
    let a = Server::start_with(replica(&shared, true), Some(pg.url.clone())).await;
    let ing = hs256(&claims("ann", "bank", &["ingester"], &["board"]));
    let text = "the quarterly bonus pool is four percent";
    assert_eq!(write(&a, &ing, text, &["board", "staff"]).await, 201);
    let mut b = Server::start_with(replica(&shared, false), Some(pg.url.clone())).await;
    // Narrowed through A; B's indexes keep version 1 with staff in its ACL.
    assert_eq!(write(&a, &ing, text, &["board"]).await, 200);
    let before = b.stdout.lock().unwrap().len();
    b.restart().await;
    let printed: Vec<String> = b.stdout.lock().unwrap()[before..].to_vec();
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("reconciled:") && l.contains("bank/memo")),
        "{printed:?}"
    );
    let staff = hs256(&claims("sam", "bank", &["reader"], &["staff"]));
    assert!(
        search(&b, &staff, "quarterly bonus pool", "lexical")
            .await
            .is_empty()
    );
    drop(b);
    drop(a);
    pg.drop_db().await;
}

/// Two gateways on a three-node Qdrant cluster started from `QDRANT_BIN`
/// (the collection with 3 shards and 2 copies, from configuration): writes
/// through A and dense searches through B go on while one Qdrant node is
/// killed (`kill -9`); no search fails and every write A acknowledged is
/// found through B.
#[tokio::test]
async fn two_replicas_on_a_qdrant_cluster_lose_nothing_when_a_node_dies() {
    use sovra_vectors::nodes::QdrantNode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let Some(bin) = QdrantNode::binary() else {
        return;
    };
    let qdir = tempfile::tempdir().unwrap();
    let mut nodes = QdrantNode::cluster(&bin, qdir.path()).await.unwrap();
    let pg = pg_fresh().await;
    let shared = collection();
    let on_cluster = || Options {
        env: vec![
            ("SOVRA__VECTORS__BACKEND".into(), "qdrant".into()),
            ("SOVRA__VECTORS__URL".into(), nodes[0].url()),
            ("SOVRA__VECTORS__COLLECTION".into(), shared.clone()),
            ("SOVRA__VECTORS__SHARDS".into(), "3".into()),
            ("SOVRA__VECTORS__REPLICATION_FACTOR".into(), "2".into()),
        ],
        ..Options::new(Db::Postgres)
    };
    let a = Server::start_with(on_cluster(), Some(pg.url.clone())).await;
    let b = Server::start_with(on_cluster(), Some(pg.url.clone())).await;
    let ing = hs256(&claims("ann", "bank", &["ingester"], &["board"]));
    let board = hs256(&claims("bea", "bank", &["reader"], &["board"]));
    let text = |i: usize| {
        format!(
            "ledger entry {i}: account {} settled on day {}",
            i * 7919,
            i % 28
        )
    };

    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (client, url, token) = (b.client.clone(), b.url("/v1/search"), board.clone());
        let (stop, searches) = (stop.clone(), searches.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"query": "ledger entry settled", "mode": "dense"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        searches.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        if i == 15 {
            nodes[2].kill();
        }
        let status = a
            .client
            .post(a.url("/v1/documents"))
            .bearer_auth(&ing)
            .json(&json!({"id": format!("w{i}"), "title": "Ledger", "text": text(i), "acl": {"groups": ["board"]}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 201 {
            acknowledged.push(i);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let failures = reader.await.unwrap();
    assert!(failures.is_empty(), "failed searches on B: {failures:?}");
    assert!(searches.load(Ordering::SeqCst) > 5);
    for &i in &acknowledged {
        let r = b
            .client
            .post(b.url("/v1/search"))
            .bearer_auth(&board)
            .json(&json!({"query": text(i), "mode": "dense", "top_k": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let hits = json(r).await["results"].as_array().unwrap().clone();
        assert!(
            hits.iter()
                .any(|h| h["document_id"] == format!("w{i}").as_str()),
            "acknowledged write w{i} not found on B: {hits:?}"
        );
    }
    println!(
        "qdrant cluster: {} of 40 writes acknowledged on A, all found on B; {} searches on B, none failed; a node killed after 15 writes",
        acknowledged.len(),
        searches.load(Ordering::SeqCst)
    );
    drop(b);
    drop(a);
    pg.drop_db().await;
}
