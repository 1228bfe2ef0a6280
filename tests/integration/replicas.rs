//! Two gateways on one PostgreSQL catalog, each with its own indexes: what
//! one replica serves is checked against the catalog, so a change made
//! through the other is never undone by a lagging index.

use serde_json::{Value, json};

use crate::support::*;

async fn search(s: &Server, token: &str, q: &str, mode: &str) -> Vec<Value> {
    let r = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(token)
        .json(&json!({"query": q, "mode": mode}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await["results"].as_array().unwrap().clone()
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

#[tokio::test]
async fn a_lagging_replica_serves_neither_revoked_nor_replaced_text() {
    let pg = pg_fresh().await;
    let a = Server::start_with(Options::new(Db::Postgres), Some(pg.url.clone())).await;
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
    // board and staff, into B's own indexes.
    let b = Server::start_with(Options::new(Db::Postgres), Some(pg.url.clone())).await;
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
