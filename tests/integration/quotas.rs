//! Quotas per subject and tenant, shared by two replicas through one Redis
//! (127.0.0.1:6379, as on every development and CI machine).

use serde_json::json;

use crate::support::*;

fn shared(prefix: &str, extra: &[(&str, &str)]) -> Options {
    let mut env: Vec<(String, String)> = vec![
        ("SOVRA__LIMITS__BACKEND".into(), "redis".into()),
        (
            "SOVRA__LIMITS__REDIS_URL".into(),
            std::env::var("SOVRA_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
        ("SOVRA__LIMITS__KEY_PREFIX".into(), prefix.into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Options {
        env,
        ..Options::new(Db::Sqlite)
    }
}

#[tokio::test]
async fn a_request_quota_holds_across_two_replicas() {
    let prefix = format!("sovra-test-{}", uuid::Uuid::now_v7().simple());
    let extra = [("SOVRA__LIMITS__REQUESTS_PER_MINUTE__READER", "5")];
    let (a, _) = Server::start_opts(shared(&prefix, &extra)).await;
    let (b, _) = Server::start_opts(shared(&prefix, &extra)).await;
    let rita = hs256(&claims("rita", "bank", &["reader"], &[]));
    for i in 0..5 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(s.get("/v1/whoami", Some(&rita)).await.status(), 200, "#{i}");
    }
    // The sixth, on either replica, is over the shared allowance.
    let mut refused = Vec::new();
    for s in [&a, &b] {
        let r = s.get("/v1/whoami", Some(&rita)).await;
        assert_eq!(r.status(), 429);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        refused.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        let body = json(r).await;
        assert_eq!(body["code"], "rate_limited");
    }
    // Another subject, and a role without a quota, are not affected.
    let ron = hs256(&claims("ron", "bank", &["reader"], &[]));
    assert_eq!(b.get("/v1/whoami", Some(&ron)).await.status(), 200);
    let auditor = hs256(&claims("rita", "bank", &["reader", "auditor"], &[]));
    assert_eq!(a.get("/v1/whoami", Some(&auditor)).await.status(), 200);
    // Each refusal is audited where it happened, with its reason.
    for (s, id) in [(&a, &refused[0]), (&b, &refused[1])] {
        let records = s.audit_records();
        let rec = records.iter().find(|r| r["request_id"] == *id).unwrap();
        assert_eq!(
            (rec["status"].as_i64(), rec["reason"].as_str()),
            (Some(429), Some("quota_requests"))
        );
        assert_eq!(rec["subject"], "rita");
    }
    let metrics = a.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("sovra_quota_denials_total{reason=\"quota_requests\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_daily_token_budget_holds_across_two_replicas() {
    let prefix = format!("sovra-test-{}", uuid::Uuid::now_v7().simple());
    let extra = [("SOVRA__LIMITS__TOKENS_PER_DAY__READER", "12")];
    let (a, _) = Server::start_opts(shared(&prefix, &extra)).await;
    let (b, _) = Server::start_opts(shared(&prefix, &extra)).await;
    let rita = hs256(&claims("rita", "bank", &["reader"], &[]));
    let chat = json!({
        "model": "sovra-tiny-test",
        "messages": [{"role": "user", "content": "say something"}],
        "max_tokens": 8,
        "sovra": {"retrieval": false},
    });
    let mut spent = 0;
    let mut refused = false;
    for i in 0..8 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = s
            .client
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&rita)
            .json(&chat)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(spent >= 12, "refused after only {spent} tokens");
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(json(r).await["code"], "rate_limited");
            refused = true;
            break;
        }
        assert_eq!(r.status(), 200);
        spent += json(r).await["usage"]["completion_tokens"]
            .as_u64()
            .unwrap();
    }
    assert!(
        refused,
        "{spent} tokens generated without reaching the budget of 12"
    );
    // Another subject still has its budget.
    let ron = hs256(&claims("ron", "bank", &["reader"], &[]));
    let r = b
        .client
        .post(b.url("/v1/chat/completions"))
        .bearer_auth(&ron)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
