//! HTTP behaviour: problem documents, limits, headers, tracing, health and metrics.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn bad_requests_get_problem_documents_and_the_server_keeps_answering() {
    let opts = Options {
        env: vec![("SOVRA__SERVER__BODY_LIMIT_BYTES".into(), "1024".into())],
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let admin = token(&["admin"]);
    let post = |body: reqwest::Body, ct: &'static str| {
        s.client
            .post(s.url("/v1/audit/prune"))
            .bearer_auth(&admin)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Response, u16, &str, Option<&str>)> = vec![
        (
            post("{\"before\": 12}".into(), "application/json")
                .await
                .unwrap(),
            400,
            "invalid_json",
            Some("before"),
        ),
        (
            post("{\"befor\": \"x\"}".into(), "application/json")
                .await
                .unwrap(),
            400,
            "invalid_json",
            None,
        ),
        (
            post("{not json".into(), "application/json").await.unwrap(),
            400,
            "invalid_json",
            None,
        ),
        (
            post(vec![0xff, 0xfe, 0x00].into(), "application/json")
                .await
                .unwrap(),
            400,
            "invalid_json",
            None,
        ),
        (
            post("before=x".into(), "application/x-www-form-urlencoded")
                .await
                .unwrap(),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        (
            post(
                format!("{{\"before\": \"{}\"}}", "x".repeat(4096)).into(),
                "application/json",
            )
            .await
            .unwrap(),
            413,
            "payload_too_large",
            None,
        ),
        (
            s.get("/v1/no-such-route", Some(&admin)).await,
            404,
            "not_found",
            None,
        ),
        (
            s.client
                .delete(s.url("/v1/whoami"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            405,
            "method_not_allowed",
            None,
        ),
    ];
    for (r, status, code, field) in cases {
        assert_eq!(r.status().as_u16(), status, "{code}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{code}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], code);
        assert_eq!(body["status"], status);
        if let Some(f) = field {
            assert_eq!(body["field"], f, "{code}");
        }
    }
    assert_eq!(s.get("/healthz", None).await.status(), 200);
    // Every one of those requests was audited.
    let records = s.audit_records();
    assert_eq!(records.len(), 8);
    assert!(
        records
            .iter()
            .any(|r| r["status"] == 413 && r["reason"] == "payload_too_large")
    );
    s.verify_ok();
}

#[tokio::test]
async fn request_and_trace_ids_flow_into_headers_and_the_record() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let r = s
        .client
        .get(s.url("/v1/whoami"))
        .bearer_auth(token(&["reader"]))
        .header("x-request-id", "req-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42");
    assert_eq!(
        r.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // Without one, ids are generated.
    let r2 = s.get("/v1/whoami", Some(&token(&["reader"]))).await;
    let generated = r2.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36);
    let records = s.audit_records();
    assert_eq!(records[0]["request_id"], "req-42");
    assert_eq!(records[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(records[0]["client_addr"], "127.0.0.1");
    assert_eq!(records[0]["action"], "whoami");
    assert_eq!(records[0]["roles"], json!(["reader"]));
    assert_eq!(records[1]["request_id"], generated.as_str());
    let id = records[0]["id"].as_str().unwrap();
    assert_eq!(&id[14..15], "7", "UUIDv7");
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_need_no_token_and_are_not_audited() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        assert_eq!(s.get("/healthz", None).await.status(), 200);
        let ready = json(s.get("/readyz", None).await).await;
        assert_eq!(ready["status"], "ready");
        s.get("/v1/whoami", Some(&token(&["reader"]))).await;
        let m = s.get("/metrics", None).await.text().await.unwrap();
        assert!(
            m.contains(
                "sovra_http_requests_total{method=\"GET\",route=\"/v1/whoami\",status=\"200\"} 1"
            ),
            "{m}"
        );
        assert!(m.contains("sovra_http_request_duration_seconds_bucket"));
        assert!(m.contains("sovra_audit_commit_seconds_count"));
        assert!(!m.contains("alice"), "no subject in metric labels");
        // The served OpenAPI document is the committed one.
        let served = json(s.get("/openapi.json", None).await).await;
        let committed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../docs/openapi.json"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            served, committed,
            "GET /openapi.json differs from docs/openapi.json"
        );
        assert_eq!(s.audit_records().len(), 1, "{db:?}");
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn readiness_fails_without_migrations() {
    let pg = pg_fresh().await;
    let opts = Options {
        env: vec![("SOVRA__DATABASE__MIGRATE_ON_START".into(), "false".into())],
        ..Options::new(Db::Postgres)
    };
    let s = Server::start_with(opts, Some(pg.url.clone())).await;
    let r = s.get("/readyz", None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(json(r).await["code"], "not_ready");
    let out = s.cli(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.get("/readyz", None).await.status(), 200);
    drop(s);
    pg.drop_db().await;
}
