//! Meaning search: embeddings, the vector store, hybrid retrieval with the
//! ACL inside both indexes, the OpenAI-compatible embeddings endpoint, and
//! start-up reconciliation of the catalog with both indexes.

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

fn demo(path: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("../../demo/corpus").join(path)).unwrap()
}

async fn ingest(s: &Server, path: &str, id: &str, group: &str) {
    let ing = hs256(&claims("ivan", "bank", &["ingester"], &[]));
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(demo(path))
                .file_name(path.rsplit('/').next().unwrap().to_owned()),
        )
        .text("id", id.to_owned())
        .text("acl_groups", group.to_owned());
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .bearer_auth(ing)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{path}: {}",
        r.text().await.unwrap()
    );
}

async fn search(s: &Server, token: &str, q: &str, mode: &str) -> Vec<Value> {
    let r = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(token)
        .json(&json!({"query": q, "mode": mode, "top_k": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!(body["mode"], mode);
    body["results"].as_array().unwrap().clone()
}

fn docs(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["document_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn hybrid_finds_paraphrases_and_identifiers_within_the_acl() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        ingest(&s, "staff/annual-leave-policy.md", "leave", "staff").await;
        ingest(&s, "staff/code-of-conduct.md", "conduct", "staff").await;
        ingest(&s, "pharmacy/formulary-codes.txt", "formulary", "pharmacy").await;
        ingest(&s, "nursing/sepsis-protocol.pdf", "sepsis", "nursing").await;
        let everyone = hs256(&claims(
            "p",
            "bank",
            &["reader"],
            &["staff", "pharmacy", "nursing"],
        ));
        // A paraphrase: no word in common with the policy, found by meaning.
        let q = "vacation allowance";
        assert!(
            !docs(&search(&s, &everyone, q, "lexical").await).contains(&"leave"),
            "{db:?}"
        );
        let dense = search(&s, &everyone, q, "dense").await;
        assert_eq!(dense[0]["document_id"], "leave", "{db:?}: {dense:?}");
        assert!(dense[0]["dense_score"].as_f64().unwrap() > 0.2);
        let hybrid = search(&s, &everyone, q, "hybrid").await;
        assert_eq!(hybrid[0]["document_id"], "leave");
        assert_eq!(hybrid[0]["lexical_rank"], Value::Null);
        assert_eq!(hybrid[0]["dense_rank"], 1);
        assert!(
            !hybrid[0]["snippet"].as_str().unwrap().is_empty(),
            "dense-only hits get text from the catalog"
        );
        // An exact identifier: BM25 finds it, and it leads the fused list.
        let hybrid = search(&s, &everyone, "FM-0412", "hybrid").await;
        assert_eq!(hybrid[0]["document_id"], "formulary");
        assert_eq!(hybrid[0]["lexical_rank"], 1);
        let fused = hybrid[0]["score"].as_f64().unwrap();
        let k = f64::from(sovra_config::SearchSettings::default().rrf_k);
        assert!(
            (fused
                - (1.0 / (k + 1.0)
                    + hybrid[0]["dense_rank"]
                        .as_u64()
                        .map_or(0.0, |r| 1.0 / (k + r as f64))))
            .abs()
                < 1e-6,
            "RRF with the default k"
        );
        // The ACL is inside both legs: a nurse never sees the formulary or the staff documents.
        let nurse = hs256(&claims("n", "bank", &["reader"], &["nursing"]));
        for mode in ["lexical", "dense", "hybrid"] {
            for q in [
                "FM-0412 morphine",
                "vacation allowance",
                "gifts from suppliers",
            ] {
                let got = search(&s, &nurse, q, mode).await;
                assert!(
                    docs(&got).iter().all(|d| *d == "sepsis"),
                    "{db:?} {mode} {q}: {got:?}"
                );
            }
        }
        let other_tenant = hs256(&claims(
            "x",
            "clinic",
            &["reader"],
            &["staff", "nursing", "pharmacy"],
        ));
        assert!(
            search(&s, &other_tenant, "sepsis antibiotics", "hybrid")
                .await
                .is_empty()
        );
        // Deleting removes the document's vectors too.
        let ing = hs256(&claims("ivan", "bank", &["ingester"], &["staff"]));
        let r = s
            .client
            .delete(s.url("/v1/documents/leave"))
            .bearer_auth(ing)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(
            !docs(&search(&s, &everyone, "vacation allowance", "dense").await).contains(&"leave")
        );
        let bad = s
            .client
            .post(s.url("/v1/search"))
            .bearer_auth(&everyone)
            .json(&json!({"query": "x", "mode": "fuzzy"}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(json(bad).await["field"], "mode");
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn embeddings_endpoint_is_openai_compatible() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let reader = token(&["reader"]);
    let post = |body: Value| {
        s.client
            .post(s.url("/v1/embeddings"))
            .bearer_auth(&reader)
            .json(&body)
            .send()
    };
    let r = post(json!({"input": ["annual leave", "time off"], "model": "multilingual-e5-small"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "multilingual-e5-small");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let v: Vec<f64> = body["data"][1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 384);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3);
    assert_eq!(body["data"][1]["index"], 1);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);
    let r = post(json!({"input": "one", "encoding_format": "base64"}))
        .await
        .unwrap();
    let b64 = json(r).await["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .len(),
        384 * 4
    );
    for (body, field) in [
        (
            json!({"input": "x", "model": "text-embedding-3-large"}),
            "model",
        ),
        (json!({"input": []}), "input"),
        (json!({"input": "x", "dimensions": 1536}), "dimensions"),
        (json!({"input": 5}), "input"),
    ] {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), 400, "{field}");
        assert_eq!(json(r).await["field"], field);
    }
    let r = s
        .client
        .post(s.url("/v1/embeddings"))
        .bearer_auth(token(&["auditor"]))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn start_up_reconciles_the_catalog_with_both_indexes() {
    let (mut s, _) = Server::start(Db::Sqlite).await;
    ingest(&s, "staff/annual-leave-policy.md", "leave", "staff").await;
    ingest(&s, "staff/code-of-conduct.md", "conduct", "staff").await;
    ingest(&s, "nursing/sepsis-protocol.pdf", "sepsis", "nursing").await;
    let reader = hs256(&claims("p", "bank", &["reader"], &["staff", "nursing"]));
    s.kill9();
    // A crash lost the whole vector store and the lexical index, and a
    // document left the catalog without leaving the indexes.
    let data = std::path::Path::new(s.db_url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    // (the default embedder's store: `vectors-<model>`, or `vectors` for MiniLM)
    let mut removed = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "vectors" || name.starts_with("vectors-") {
            std::fs::remove_dir_all(&path).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "one vector store in {}", data.display());
    std::fs::remove_dir_all(data.join("index")).unwrap();
    s.restart().await;
    for mode in ["lexical", "dense"] {
        let got = search(&s, &reader, "vacation allowance annual leave", mode).await;
        assert!(
            docs(&got).contains(&"leave"),
            "{mode}: rebuilt from the catalog: {got:?}"
        );
    }
    s.kill9();
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&s.db_url).await.unwrap();
        for t in ["chunks", "document_acl", "document_metadata"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {t} WHERE document_id = 'conduct'"
            )))
            .execute(&mut c)
            .await
            .unwrap();
        }
        sqlx::query("DELETE FROM documents WHERE id = 'conduct'")
            .execute(&mut c)
            .await
            .unwrap();
    }
    s.restart().await;
    for mode in ["lexical", "dense"] {
        let got = search(&s, &reader, "gifts from suppliers whistleblowing", mode).await;
        assert!(
            !docs(&got).contains(&"conduct"),
            "{mode}: stray removed: {got:?}"
        );
    }
}

#[tokio::test]
async fn a_new_embedding_model_fills_its_own_vector_store_from_the_catalog() {
    let e5 = models_dir().join("multilingual-e5-small/model.onnx");
    if !e5.exists() {
        eprintln!(
            "NOTICE: {} is missing (scripts/setup-models makes it); skipped",
            e5.display()
        );
        return;
    }
    let minilm = (
        "SOVRA__EMBEDDINGS__MODEL".to_owned(),
        "all-minilm-l6-v2".to_owned(),
    );
    let (mut s, _) = Server::start_opts(Options {
        env: vec![minilm.clone()],
        ..Options::new(Db::Sqlite)
    })
    .await;
    ingest(&s, "staff/annual-leave-policy.md", "leave", "staff").await;
    ingest(&s, "nursing/sepsis-protocol.pdf", "sepsis", "nursing").await;
    let reader = hs256(&claims("p", "bank", &["reader"], &["staff", "nursing"]));
    let data = std::path::Path::new(s.db_url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    // An Indonesian question: only a multilingual embedder reads it.
    let question = "Berapa hari cuti tahunan yang didapat karyawan?";
    s.env = vec![(
        "SOVRA__EMBEDDINGS__MODEL".into(),
        "multilingual-e5-small".into(),
    )];
    s.restart().await;
    assert!(
        data.join("vectors-multilingual-e5-small").is_dir(),
        "e5's vectors live in their own store"
    );
    let got = search(&s, &reader, question, "dense").await;
    assert_eq!(
        docs(&got).first(),
        Some(&"leave"),
        "embedded again from the catalog: {got:?}"
    );
    let r = s
        .client
        .post(s.url("/v1/embeddings"))
        .bearer_auth(&reader)
        .json(&json!({"input": "cuti tahunan"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["model"], "multilingual-e5-small");
    // Back to all-MiniLM: its own store, untouched, still answers.
    s.env = vec![minilm];
    s.restart().await;
    let got = search(&s, &reader, "vacation allowance annual leave", "dense").await;
    assert_eq!(docs(&got).first(), Some(&"leave"), "{got:?}");
}
