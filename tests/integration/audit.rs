//! The audit trail on SQLite and PostgreSQL: one record per request, a chain
//! that verifies under concurrency and breaks visibly under tampering,
//! append-only tables, fail-closed commits, queries, exports and pruning.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::*;

/// Runs raw SQL against the server's database, as a superuser would.
pub async fn sql(s: &Server, db: Db, statement: &str) -> Result<(), String> {
    let stmt = sqlx::AssertSqlSafe(statement.to_owned());
    match db {
        Db::Postgres => {
            let mut c = sqlx::PgConnection::connect(&s.db_url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(stmt)
                .execute(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Db::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&s.db_url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(stmt)
                .execute(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

#[tokio::test]
async fn concurrent_requests_form_one_verified_chain() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let reader = token(&["reader"]);
        let bad = "not.a.token".to_owned();
        let requests = (0..200).map(|i| {
            let s = &s;
            let t = if i % 5 == 0 {
                bad.clone()
            } else {
                reader.clone()
            };
            let path = if i % 7 == 0 {
                "/v1/audit/events"
            } else {
                "/v1/whoami"
            };
            async move {
                let r = s
                    .client
                    .get(s.url(path))
                    .bearer_auth(t)
                    .header("x-request-id", format!("c-{i}"))
                    .send()
                    .await
                    .unwrap();
                (format!("c-{i}"), r.status().as_u16())
            }
        });
        let results = join_all(requests).await;
        let records = s.audit_records();
        assert_eq!(records.len(), 200, "{db:?}: one record per request");
        for (rid, status) in &results {
            let rec = records
                .iter()
                .find(|r| r["request_id"] == rid.as_str())
                .unwrap();
            assert_eq!(rec["status"], *status, "{db:?} {rid}");
        }
        let seqs: Vec<i64> = records.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "{db:?}: gapless");
        let report = s.verify_ok();
        assert_eq!(report["checked"], 200);
        let api = json(s.get("/v1/audit/verify", Some(&token(&["auditor"]))).await).await;
        assert_eq!(api["ok"], true);
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn tables_are_append_only_and_tampering_is_found() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let t = token(&["reader"]);
        for _ in 0..5 {
            assert_eq!(s.get("/v1/whoami", Some(&t)).await.status(), 200);
        }
        // The database itself refuses changes.
        for stmt in [
            "UPDATE audit_events SET status = 500 WHERE seq = 3",
            "DELETE FROM audit_events WHERE seq = 5",
            "UPDATE audit_events SET hash = 'x'",
        ] {
            let err = sql(&s, db, stmt).await.expect_err(stmt);
            assert!(err.contains("append-only"), "{db:?} {stmt}: {err}");
        }
        if db == Db::Postgres {
            let err = sql(&s, db, "TRUNCATE audit_events")
                .await
                .expect_err("truncate");
            assert!(err.contains("append-only"), "{err}");
        }
        s.verify_ok();
        // A superuser who disables the guard and rewrites a record is caught.
        let disable = match db {
            Db::Postgres => {
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only; UPDATE audit_events SET subject = 'someone-else' WHERE seq = 3"
            }
            Db::Sqlite => {
                "DROP TRIGGER audit_events_no_update; UPDATE audit_events SET subject = 'someone-else' WHERE seq = 3"
            }
        };
        sql(&s, db, disable).await.unwrap();
        let out = s.cli(&["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{db:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], false);
        assert_eq!(report["first_broken"]["seq"], 3);
        assert!(
            report["first_broken"]["problem"]
                .as_str()
                .unwrap()
                .contains("hash")
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at seq 3"));
        // Removing a record from the middle is caught too.
        let delete = match db {
            Db::Postgres => {
                "UPDATE audit_events SET subject = 'alice' WHERE seq = 3; ALTER TABLE audit_events DISABLE TRIGGER USER; DELETE FROM audit_events WHERE seq = 4"
            }
            Db::Sqlite => {
                "DROP TRIGGER audit_events_no_delete; DELETE FROM audit_events WHERE seq = 4"
            }
        };
        sql(&s, db, delete).await.unwrap();
        let out = s.cli(&["audit", "verify"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], false, "{db:?}");
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn no_answer_without_a_committed_record() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let t = token(&["reader"]);
        assert_eq!(s.get("/v1/whoami", Some(&t)).await.status(), 200);
        let (break_it, repair) = match db {
            Db::Postgres => (
                "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$; CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION fail_insert();",
                "DROP TRIGGER fail_insert ON audit_events",
            ),
            Db::Sqlite => (
                "CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
                "DROP TRIGGER fail_insert",
            ),
        };
        sql(&s, db, break_it).await.unwrap();
        let r = s.get("/v1/whoami", Some(&t)).await;
        assert_eq!(r.status(), 503, "{db:?}");
        let body = r.text().await.unwrap();
        assert!(body.contains("audit_unavailable"), "{body}");
        assert!(!body.contains("alice"), "the answer leaked: {body}");
        // Denials are not answered either without their record.
        assert_eq!(s.get("/v1/whoami", None).await.status(), 503);
        sql(&s, db, repair).await.unwrap();
        assert_eq!(s.get("/v1/whoami", Some(&t)).await.status(), 200);
        let metrics = s.get("/metrics", None).await.text().await.unwrap();
        assert!(metrics.contains("sovra_audit_failures_total 2"), "{db:?}");
        let records = s.audit_records();
        assert_eq!(records.len(), 2);
        s.verify_ok();
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn query_filters_pages_and_tenant_scope() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        for i in 0..7 {
            let t = hs256(&claims(&format!("user{}", i % 2), "bank", &["reader"], &[]));
            assert_eq!(s.get("/v1/whoami", Some(&t)).await.status(), 200);
        }
        let other = hs256(&claims("eve", "clinic", &["reader"], &[]));
        assert_eq!(s.get("/v1/whoami", Some(&other)).await.status(), 200);
        assert_eq!(s.get("/v1/whoami", None).await.status(), 401);
        let auditor = hs256(&claims("audrey", "bank", &["auditor"], &[]));
        // Pages of 2, newest first, following the cursor.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/audit/events?subject=user0&limit=2".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = json(s.get(&path, Some(&auditor)).await).await;
            for e in page["events"].as_array().unwrap() {
                assert_eq!(e["subject"], "user0");
                seen.push(e["seq"].as_i64().unwrap());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 4, "{db:?}");
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
        // An auditor sees their own tenant only; an admin sees all.
        let page = json(s.get("/v1/audit/events?limit=1000", Some(&auditor)).await).await;
        assert!(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["tenant"] == "bank")
        );
        assert_eq!(
            s.get("/v1/audit/events?tenant=clinic", Some(&auditor))
                .await
                .status(),
            403
        );
        let admin = hs256(&claims("root", "ops", &["admin"], &[]));
        let page = json(s.get("/v1/audit/events?tenant=clinic", Some(&admin)).await).await;
        assert_eq!(page["events"].as_array().unwrap().len(), 1);
        let page = json(s.get("/v1/audit/events?status=401", Some(&admin)).await).await;
        assert_eq!(page["events"][0]["reason"], "token_missing");
        let page = json(
            s.get(
                "/v1/audit/events?action=audit.query&limit=1000",
                Some(&admin),
            )
            .await,
        )
        .await;
        assert!(
            page["events"].as_array().unwrap().len() >= 5,
            "reading the trail is audited"
        );
        let page = json(
            s.get(
                "/v1/audit/events?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z",
                Some(&admin),
            )
            .await,
        )
        .await;
        assert_eq!(page["events"].as_array().unwrap().len(), 0);
        // One event by id; another tenant's id is not found for an auditor.
        let clinic_id = json(s.get("/v1/audit/events?tenant=clinic", Some(&admin)).await).await["events"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            s.get(&format!("/v1/audit/events/{clinic_id}"), Some(&admin))
                .await
                .status(),
            200
        );
        assert_eq!(
            s.get(&format!("/v1/audit/events/{clinic_id}"), Some(&auditor))
                .await
                .status(),
            404
        );
        // Bad parameters name the field.
        for (path, field) in [
            ("/v1/audit/events?since=yesterday", "since"),
            ("/v1/audit/events?limit=0", "limit"),
            ("/v1/audit/events?status=x", "status"),
            ("/v1/audit/events?cursor=abc", "cursor"),
            ("/v1/audit/events?colour=red", "colour"),
            ("/v1/audit/export?format=xml", "format"),
        ] {
            let r = s.get(path, Some(&admin)).await;
            assert_eq!(r.status(), 400, "{path}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert_eq!(json(r).await["field"], field, "{path}");
        }
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn exports_stream_jsonl_and_csv() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let t = token(&["reader"]);
        for _ in 0..1205 / 5 {
            let reqs = (0..5).map(|_| s.get("/v1/whoami", Some(&t)));
            join_all(reqs).await;
        }
        let admin = token(&["admin"]);
        let r = s.get("/v1/audit/export?format=jsonl", Some(&admin)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let body = r.text().await.unwrap();
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // 1205 whoami records and the export's own, committed before it streams.
        assert_eq!(lines.len(), 1206, "{db:?}: streamed across pages");
        assert_eq!(lines[1205]["action"], "audit.export");
        let ids: HashSet<_> = lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1206);
        let r = s
            .get("/v1/audit/export?format=csv&action=whoami", Some(&admin))
            .await;
        assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
        let csv = r.text().await.unwrap();
        let mut rows = csv.lines();
        assert!(rows.next().unwrap().starts_with("seq,id,ts,request_id"));
        assert_eq!(rows.count(), 1205);
        // The CLI's export agrees, and its time window filters.
        let out = s.cli(&[
            "audit",
            "export",
            "--format",
            "csv",
            "--since",
            "2000-01-01T00:00:00Z",
        ]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 1206);
        let out = s.cli(&["audit", "export", "--until", "2000-01-01T00:00:00Z"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 0);
        let out = s.cli(&["audit", "export", "--since", "soon"]);
        assert!(!out.status.success());
        finish(s, pg).await;
    }
}

/// `sovra audit verify` with only a public key configured (the server's
/// signing key comes from its environment, which this run does not get).
fn verify_public(s: &Server, key: &str) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["audit", "verify", "--config"])
        .arg(&s.config)
        .env("SOVRA__AUDIT__CHECKPOINT_PUBLIC_KEY", key)
        .output()
        .unwrap()
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable_behind_a_signed_checkpoint() {
    for db in BACKENDS {
        // A retention of 1.7 s, so that records can age past it here; the
        // signing key outside the data directory.
        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("checkpoint.key");
        let made = std::process::Command::new(bin())
            .args(["audit", "keygen", "--output"])
            .arg(&key_file)
            .output()
            .unwrap();
        assert!(made.status.success());
        let public = String::from_utf8_lossy(&made.stdout).trim().to_owned();

        let opts = Options {
            env: vec![
                ("SOVRA__AUDIT__RETENTION_DAYS".into(), "0.00002".into()),
                (
                    "SOVRA__AUDIT__CHECKPOINT_KEY_FILE".into(),
                    key_file.display().to_string(),
                ),
            ],
            ..Options::new(db)
        };
        let (s, pg) = Server::start_opts(opts).await;
        let t = token(&["reader"]);
        for _ in 0..6 {
            s.get("/v1/whoami", Some(&t)).await;
        }
        let cut = chrono::Utc::now().to_rfc3339();
        tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
        for _ in 0..3 {
            s.get("/v1/whoami", Some(&t)).await;
        }
        let admin = token(&["admin"]);
        let r = s
            .client
            .post(s.url("/v1/audit/prune"))
            .bearer_auth(&admin)
            .json(&json!({"before": cut}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let report = json(r).await;
        assert_eq!(report["pruned"], 6, "{db:?}");
        assert_eq!(report["checkpoint_seq"], 6);
        let v = s.verify_ok();
        assert_eq!(v["anchored_at_checkpoint"], 6);
        // The public key alone verifies the checkpoint; another key does not.
        assert!(verify_public(&s, &public).status.success(), "{db:?}");
        let other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert_eq!(verify_public(&s, other).status.code(), Some(1), "{db:?}");
        let err = sql(&s, db, "UPDATE audit_checkpoints SET hash = 'x'")
            .await
            .expect_err("checkpoint update");
        assert!(err.contains("append-only"), "{err}");
        let err = sql(&s, db, "DELETE FROM audit_checkpoints")
            .await
            .expect_err("checkpoint delete");
        assert!(err.contains("append-only"), "{err}");
        // New records continue the chain from the checkpoint.
        s.get("/v1/whoami", Some(&t)).await;
        let v = s.verify_ok();
        assert_eq!(v["head_seq"], 11);
        // A checkpoint forged without the key does not verify.
        let forged = match db {
            Db::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER USER",
            Db::Sqlite => "DROP TRIGGER audit_events_no_delete",
        };
        sql(&s, db, forged).await.unwrap();
        sql(&s, db, "INSERT INTO audit_checkpoints (seq, hash, ts_us, created_us, public_key, signature) VALUES (8, 'ab', 0, 0, 'x', '00'); DELETE FROM audit_events WHERE seq <= 8").await.unwrap();
        let out = s.cli(&["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{db:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            report["first_broken"]["problem"]
                .as_str()
                .unwrap()
                .contains("signature")
        );
        // Bad prune requests.
        let r = s
            .client
            .post(s.url("/v1/audit/prune"))
            .bearer_auth(&admin)
            .json(&json!({"before": "2999-01-01T00:00:00Z"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(json(r).await["field"], "before");
        finish(s, pg).await;
    }
}
