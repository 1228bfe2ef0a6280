//! Durability: SIGKILL under load loses no answered request's record and
//! leaves a chain that verifies; SIGTERM drains in-flight requests.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::support::*;

pub async fn load(s: &Server, stop: Arc<AtomicBool>, workers: usize) -> Vec<String> {
    let ok: Arc<Mutex<Vec<String>>> = Arc::default();
    let t = token(&["reader"]);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url, stop, ok, t) = (
            s.client.clone(),
            s.url("/v1/whoami"),
            stop.clone(),
            ok.clone(),
            t.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let rid = format!("load-{w}-{i}");
                let sent = client
                    .get(&url)
                    .bearer_auth(&t)
                    .header("x-request-id", &rid)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => ok.lock().await.push(rid),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(ok)
        .map(|m| m.into_inner())
        .unwrap_or_default()
}

/// SIGKILLs `pid` 1.5 s from now, then sets `stop` after `linger`.
pub fn sigkill_later(
    pid: u32,
    stop: Arc<AtomicBool>,
    linger: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        tokio::time::sleep(linger).await;
        stop.store(true, Ordering::SeqCst);
    })
}

#[tokio::test]
async fn sigkill_under_load_loses_no_answered_record() {
    for db in BACKENDS {
        let (mut s, pg) = Server::start(db).await;
        let stop = Arc::new(AtomicBool::new(false));
        let killer = sigkill_later(s.pid(), stop.clone(), Duration::from_millis(200));
        let answered = load(&s, stop, 8).await;
        killer.await.unwrap();
        assert!(
            answered.len() > 20,
            "{db:?}: only {} requests answered",
            answered.len()
        );
        s.restart().await;
        let report = s.verify_ok();
        let records = s.audit_records();
        let recorded: HashSet<&str> = records
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        let missing: Vec<_> = answered
            .iter()
            .filter(|rid| !recorded.contains(rid.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{db:?}: answered but not recorded: {missing:?}"
        );
        // The restarted server extends the same chain.
        s.get("/v1/whoami", Some(&token(&["reader"]))).await;
        let after = s.verify_ok();
        assert_eq!(
            after["head_seq"].as_i64(),
            report["head_seq"].as_i64().map(|h| h + 1)
        );
        eprintln!(
            "{db:?}: {} answered before SIGKILL, {} records, chain verified",
            answered.len(),
            records.len()
        );
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let (mut s, _) = Server::start(Db::Sqlite).await;
    let stop = Arc::new(AtomicBool::new(false));
    let pid = s.pid();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let answered = load(&s, stop, 4).await;
    stopper.await.unwrap();
    let status = s.terminate_wait();
    assert!(status.success(), "graceful exit: {status}");
    s.restart().await;
    s.verify_ok();
    let records = s.audit_records();
    let recorded: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert!(answered.iter().all(|rid| recorded.contains(rid.as_str())));
}
