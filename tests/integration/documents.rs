//! Documents in: every format, replace and delete across catalog and index,
//! visibility by ACL and tenant, bad inputs, and the ingest CLI.

use serde_json::{Value, json};

use crate::support::*;

fn demo(path: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("../../demo/corpus").join(path)).unwrap()
}

fn bad(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("documents").join(name)).unwrap()
}

async fn upload(
    s: &Server,
    token: &str,
    file: Vec<u8>,
    name: &str,
    mime: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(file)
            .file_name(name.to_owned())
            .mime_str(mime)
            .unwrap(),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    s.client
        .post(s.url("/v1/documents"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn post_json(s: &Server, token: &str, body: Value) -> reqwest::Response {
    s.client
        .post(s.url("/v1/documents"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn search(s: &Server, token: &str, q: &str) -> Vec<String> {
    let r = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(token)
        .json(&json!({"query": q, "top_k": 20, "mode": "lexical"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "search {q}");
    let body = json(r).await;
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect()
}

fn ingester(groups: &[&str]) -> String {
    hs256(&claims("ivan", "bank", &["ingester"], groups))
}

fn reader(groups: &[&str]) -> String {
    hs256(&claims("rita", "bank", &["reader"], groups))
}

#[tokio::test]
async fn every_format_is_ingested_and_searchable_at_once() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let ing = ingester(&["nursing"]);
        let acl = [("acl_groups", "nursing")];
        let cases = [
            (
                "nursing/hand-hygiene.md",
                "text/markdown",
                "hygiene",
                "Clostridioides",
            ),
            (
                "nursing/fall-prevention.html",
                "text/html",
                "falls",
                "Morse",
            ),
            ("nursing/triage-zh.txt", "text/plain", "triage", "分诊"),
            (
                "nursing/sepsis-protocol.pdf",
                "application/pdf",
                "sepsis",
                "lactate",
            ),
            (
                "nursing/medication-administration.docx",
                sovra_ingest_docx(),
                "meds",
                "wristband",
            ),
        ];
        let reader = reader(&["nursing"]);
        for (path, mime, id, word) in cases {
            let mut fields = acl.to_vec();
            fields.push(("id", id));
            let r = upload(&s, &ing, demo(path), path, mime, &fields).await;
            assert_eq!(
                r.status(),
                201,
                "{db:?} {path}: {}",
                r.text().await.unwrap()
            );
            // Read-your-writes: searchable as soon as the call returned.
            assert_eq!(
                search(&s, &reader, word).await,
                vec![id.to_owned()],
                "{db:?} {path} by {word}"
            );
        }
        // HTML scripts and styles are not indexed.
        assert!(search(&s, &reader, "tracking").await.is_empty());
        // JSON: text, and base64 content with a content type.
        use base64::Engine;
        let r = post_json(&s, &ing, json!({"id": "json-text", "title": "Night shift", "text": "Night shift staffing is two nurses per ward.", "acl": {"groups": ["nursing"]}, "metadata": {"ward": "7B", "year": 2026}})).await;
        assert_eq!(r.status(), 201);
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(demo("pharmacy/high-alert-medicines.pdf"));
        let r = post_json(&s, &ing, json!({"id": "json-pdf", "title": "High alert", "content": b64, "content_type": "application/pdf", "acl": {"groups": ["nursing"]}})).await;
        assert_eq!(r.status(), 201);
        assert_eq!(search(&s, &reader, "staffing").await, vec!["json-text"]);
        assert_eq!(
            search(&s, &reader, "potassium chloride").await[0],
            "json-pdf"
        );
        // Metadata filters on search and list.
        let r = s
            .client
            .post(s.url("/v1/search"))
            .bearer_auth(&reader)
            .json(&json!({"query": "nurses", "mode": "lexical", "filter": {"metadata": {"ward": "7B"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["results"].as_array().unwrap().len(), 1);
        let list = json(
            s.get("/v1/documents?metadata.year=2026", Some(&reader))
                .await,
        )
        .await;
        assert_eq!(list["documents"][0]["id"], "json-text");
        // The writes are audited with id, version and chunk count.
        let writes: Vec<Value> = s
            .audit_records()
            .into_iter()
            .filter(|r| r["action"] == "document.write")
            .collect();
        assert_eq!(writes.len(), 7);
        assert!(
            writes
                .iter()
                .all(|w| w["document_ids"].as_array().unwrap().len() == 1
                    && w["details"]["document"]["chunks"].as_i64().unwrap() >= 1)
        );
        let searches: Vec<Value> = s
            .audit_records()
            .into_iter()
            .filter(|r| r["action"] == "search" && r["status"] == 200)
            .collect();
        assert!(searches.iter().any(|r| r["document_ids"][0] == "json-pdf"
            && r["details"]["query"]["text"] == "potassium chloride"));
        finish(s, pg).await;
    }
}

fn sovra_ingest_docx() -> &'static str {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
}

#[tokio::test]
async fn reingest_replaces_unchanged_is_a_noop_delete_removes_everywhere() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let ing = ingester(&["treasury"]);
        let rd = reader(&["treasury"]);
        let doc = |text: &str| json!({"id": "fx", "title": "FX limits", "text": text, "acl": {"groups": ["treasury"]}});
        let r = json(
            post_json(
                &s,
                &ing,
                doc("Junior dealers trade up to five million per ticket."),
            )
            .await,
        )
        .await;
        assert_eq!(
            (r["version"].as_i64(), r["created"].as_bool()),
            (Some(1), Some(true))
        );
        let r = json(
            post_json(
                &s,
                &ing,
                doc("Junior dealers trade up to five million per ticket."),
            )
            .await,
        )
        .await;
        assert_eq!(
            (r["version"].as_i64(), r["unchanged"].as_bool()),
            (Some(1), Some(true))
        );
        let r = post_json(
            &s,
            &ing,
            doc("Senior dealers trade up to twenty-five million per ticket."),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["version"], 2);
        assert!(
            search(&s, &rd, "junior").await.is_empty(),
            "{db:?}: old chunks gone"
        );
        assert_eq!(search(&s, &rd, "senior").await, vec!["fx"]);
        let got = json(s.get("/v1/documents/fx", Some(&rd)).await).await;
        assert_eq!(got["version"], 2);
        assert_eq!(got["created_by"], "ivan");
        let r = s
            .client
            .delete(s.url("/v1/documents/fx"))
            .bearer_auth(&ing)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(search(&s, &rd, "senior").await.is_empty());
        assert_eq!(s.get("/v1/documents/fx", Some(&rd)).await.status(), 404);
        let r = s
            .client
            .delete(s.url("/v1/documents/fx"))
            .bearer_auth(&ing)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let del = s
            .audit_records()
            .into_iter()
            .find(|r| r["action"] == "document.delete" && r["status"] == 204)
            .unwrap();
        assert_eq!(del["document_ids"], json!(["fx"]));
        assert_eq!(del["details"]["document"]["version"], 2);
        let admin = token(&["admin"]);
        let page = json(
            s.get("/v1/audit/events?document_id=fx&limit=100", Some(&admin))
                .await,
        )
        .await;
        assert!(
            page["events"].as_array().unwrap().len() >= 6,
            "{db:?}: every write, read and delete of fx"
        );
        s.verify_ok();
        finish(s, pg).await;
    }
}

#[tokio::test]
async fn callers_see_only_what_their_principal_may_see() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let ing = ingester(&[]);
    for (id, acl) in [
        ("t1", json!({"groups": ["treasury"]})),
        ("n1", json!({"groups": ["nursing"]})),
        ("u1", json!({"users": ["rita"]})),
    ] {
        let r = post_json(
            &s,
            &ing,
            json!({"id": id, "title": id, "text": "shared policy words", "acl": acl}),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    let other_tenant_ing = hs256(&claims("ola", "clinic", &["ingester"], &[]));
    let r = post_json(&s, &other_tenant_ing, json!({"id": "c1", "title": "c", "text": "shared policy words", "acl": {"groups": ["treasury"]}})).await;
    assert_eq!(r.status(), 201);
    // The same id in another tenant is that tenant's own document (ids are
    // unique per tenant); writing into another tenant is forbidden.
    let r = post_json(
        &s,
        &other_tenant_ing,
        json!({"id": "t1", "title": "x", "text": "clinic words", "acl": {"groups": ["treasury"]}}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = post_json(
        &s,
        &ing,
        json!({"title": "x", "text": "y", "tenant": "clinic", "acl": {"groups": ["g"]}}),
    )
    .await;
    assert_eq!(r.status(), 403);
    let mut seen = search(&s, &reader(&["treasury"]), "policy").await;
    seen.sort();
    assert_eq!(seen, vec!["t1", "u1"]);
    assert_eq!(
        search(
            &s,
            &hs256(&claims("nora", "bank", &["reader"], &["nursing"])),
            "policy"
        )
        .await,
        vec!["n1"]
    );
    assert!(
        search(
            &s,
            &hs256(&claims("x", "bank", &["reader"], &["risk"])),
            "policy"
        )
        .await
        .is_empty()
    );
    assert_eq!(
        search(
            &s,
            &hs256(&claims("x", "clinic", &["reader"], &["treasury"])),
            "policy"
        )
        .await,
        vec!["c1"]
    );
    // Lists, reads and deletes follow the same rule.
    let list = json(s.get("/v1/documents", Some(&reader(&["treasury"]))).await).await;
    let ids: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["t1", "u1"]);
    assert_eq!(
        s.get("/v1/documents/n1", Some(&reader(&["treasury"])))
            .await
            .status(),
        404
    );
    // An ingester who neither wrote it nor may read it (the writer may:
    // see the hardening tests).
    let r = s
        .client
        .delete(s.url("/v1/documents/n1"))
        .bearer_auth(hs256(&claims("ines", "bank", &["ingester"], &["treasury"])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Roles: a reader cannot write, an ingester cannot search, an auditor cannot list.
    let r = post_json(
        &s,
        &reader(&["treasury"]),
        json!({"title": "x", "text": "y", "acl": {"groups": ["g"]}}),
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(ingester(&["treasury"]))
        .json(&json!({"query": "policy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        s.get("/v1/documents", Some(&token(&["auditor"])))
            .await
            .status(),
        403
    );
    // Paging through a list.
    for i in 0..5 {
        post_json(&s, &ing, json!({"id": format!("p{i}"), "title": "p", "text": "paged", "acl": {"users": ["rita"]}})).await;
    }
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = if cursor.is_empty() {
            "/v1/documents?limit=2".to_owned()
        } else {
            format!("/v1/documents?limit=2&cursor={cursor}")
        };
        let page = json(s.get(&path, Some(&reader(&[]))).await).await;
        all.extend(
            page["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(all, vec!["p0", "p1", "p2", "p3", "p4", "u1"]);
}

#[tokio::test]
async fn bad_documents_are_clear_errors_and_leave_nothing_behind() {
    let opts = Options {
        env: vec![("SOVRA__INGEST__MAX_DOCUMENT_BYTES".into(), "2000000".into())],
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let ing = ingester(&["g"]);
    let acl = [("acl_groups", "g")];
    let cases: Vec<(Vec<u8>, &str, &str, u16, &str)> = vec![
        (
            bad("truncated.pdf"),
            "truncated.pdf",
            "application/pdf",
            422,
            "unprocessable_document",
        ),
        (
            bad("bomb.docx"),
            "bomb.docx",
            sovra_ingest_docx(),
            413,
            "payload_too_large",
        ),
        (
            bad("invalid-utf8.txt"),
            "invalid-utf8.txt",
            "text/plain",
            422,
            "unprocessable_document",
        ),
        (
            bad("empty.md"),
            "empty.md",
            "text/markdown",
            422,
            "unprocessable_document",
        ),
        (
            b"\x89PNG\r\n".to_vec(),
            "image.png",
            "image/png",
            415,
            "unsupported_media_type",
        ),
        (
            b"PK\x03\x04not really a zip".to_vec(),
            "fake.docx",
            sovra_ingest_docx(),
            422,
            "unprocessable_document",
        ),
        (
            vec![b'a'; 2_100_000],
            "big.txt",
            "text/plain",
            413,
            "payload_too_large",
        ),
    ];
    for (i, (bytes, name, mime, status, code)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        let mut fields = acl.to_vec();
        fields.push(("id", &id));
        let r = upload(&s, &ing, bytes, name, mime, &fields).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body = json(r).await;
        assert_eq!(body["code"], code, "{name}: {body}");
        assert!(!body["detail"].as_str().unwrap().is_empty());
        assert_eq!(
            s.get(&format!("/v1/documents/{id}"), Some(&reader(&["g"])))
                .await
                .status(),
            404,
            "{name} left a catalog entry"
        );
        assert_eq!(s.get("/healthz", None).await.status(), 200);
    }
    // A huge single line is chunked, not refused.
    let line = "lorem ipsum dolor sit amet ".repeat(8_000);
    let r = upload(
        &s,
        &ing,
        line.into_bytes(),
        "line.txt",
        "text/plain",
        &[("acl_groups", "g"), ("id", "line")],
    )
    .await;
    assert_eq!(r.status(), 201);
    assert!(json(r).await["chunks"].as_i64().unwrap() > 40);
    // Bad JSON fields are named.
    for (body, field) in [
        (json!({"title": "t", "text": "x"}), "acl"),
        (json!({"title": "t", "text": "x", "acl": {}}), "acl"),
        (json!({"title": "t", "acl": {"groups": ["g"]}}), "text"),
        (
            json!({"title": "t", "content": "!!", "content_type": "text/plain", "acl": {"groups": ["g"]}}),
            "content",
        ),
        (
            json!({"title": "t", "content": "aGk=", "acl": {"groups": ["g"]}}),
            "content_type",
        ),
        (
            json!({"id": "bad id!", "title": "t", "text": "x", "acl": {"groups": ["g"]}}),
            "id",
        ),
        (
            json!({"title": "t", "text": "x", "acl": {"groups": ["g"]}, "metadata": {"k": [1]}}),
            "metadata.k",
        ),
    ] {
        let r = post_json(&s, &ing, body).await;
        assert_eq!(r.status(), 400, "{field}");
        assert_eq!(json(r).await["field"], field);
    }
    let rd = reader(&["g"]);
    let list = json(s.get("/v1/documents", Some(&rd)).await).await;
    assert_eq!(
        list["documents"].as_array().unwrap().len(),
        1,
        "only the long line was stored"
    );
    s.verify_ok();
}

#[tokio::test]
async fn ingest_cli_goes_on_past_bad_files_and_reports_them() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("a.md"), "# A\n\nAlpha policy text.").unwrap();
    std::fs::write(dir.path().join("sub/b.txt"), "Bravo procedure text.").unwrap();
    std::fs::write(dir.path().join("sub/c.pdf"), bad("truncated.pdf")).unwrap();
    std::fs::write(dir.path().join("d.png"), b"\x89PNG").unwrap();
    std::fs::write(dir.path().join(".hidden.md"), "skip me").unwrap();
    let out = s.cli(&[
        "ingest",
        dir.path().to_str().unwrap(),
        "--tenant",
        "bank",
        "--acl-groups",
        "g1,g2",
        "--server",
        &s.base,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("4 files: 2 written, 0 unchanged, 2 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("failed: sub/c.pdf: HTTP 422"), "{stdout}");
    assert!(stdout.contains("failed: d.png: HTTP 415"), "{stdout}");
    let rd = hs256(&claims("x", "bank", &["reader"], &["g2"]));
    assert_eq!(search(&s, &rd, "bravo").await, vec!["sub-b.txt"]);
    // Again: unchanged, nothing rewritten.
    let out = s.cli(&[
        "ingest",
        dir.path().join("a.md").to_str().unwrap(),
        "--tenant",
        "bank",
        "--acl-groups",
        "g1,g2",
        "--server",
        &s.base,
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 files: 0 written, 1 unchanged"));
}

async fn post_ndjson(s: &Server, token: &str, lines: &[Value]) -> reqwest::Response {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    s.client
        .post(s.url("/v1/documents"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn bulk_writes_report_each_document_and_a_bad_one_fails_alone() {
    for db in BACKENDS {
        let (s, pg) = Server::start(db).await;
        let ing = ingester(&["g1"]);
        let rd = reader(&["g1"]);
        // NDJSON: two good, an unreadable PDF, a line missing its title, one more good.
        let r = post_ndjson(
            &s,
            &ing,
            &[
                json!({"id": "b1", "title": "Alpha", "text": "Alpha kestrel policy.", "acl": {"groups": ["g1"]}}),
                json!({"id": "b2", "title": "Bravo", "text": "Bravo kestrel procedure.", "acl": {"groups": ["g1"]}, "source": "bravo.txt"}),
                json!({"id": "b3", "title": "Broken", "content": b64(&bad("truncated.pdf")), "content_type": "application/pdf", "acl": {"groups": ["g1"]}}),
                json!({"id": "b4", "text": "No title here.", "acl": {"groups": ["g1"]}}),
                json!({"id": "b5", "title": "Charlie", "text": "Charlie kestrel rule.", "acl": {"groups": ["g1"]}}),
            ],
        )
        .await;
        assert_eq!(r.status(), 207, "{db:?}");
        let body = json(r).await;
        assert_eq!(
            (&body["written"], &body["unchanged"], &body["failed"]),
            (&json!(3), &json!(0), &json!(2)),
            "{db:?}: {body}"
        );
        let results = body["results"].as_array().unwrap();
        let statuses: Vec<u64> = results
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, vec![201, 201, 422, 400, 201], "{db:?}: {body}");
        let indexes: Vec<u64> = results
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
        assert_eq!(results[2]["id"], "b3");
        assert_eq!(results[2]["problem"]["code"], "unprocessable_document");
        assert_eq!(results[3]["problem"]["field"], "title", "{body}");
        assert_eq!(results[1]["document"]["chunks"], 1);
        let mut found = search(&s, &rd, "kestrel").await;
        found.sort();
        assert_eq!(found, vec!["b1", "b2", "b5"], "{db:?}");
        let listed = json(s.get("/v1/documents", Some(&rd)).await).await;
        assert_eq!(listed["documents"].as_array().unwrap().len(), 3);
        let b2 = json(s.get("/v1/documents/b2", Some(&rd)).await).await;
        assert_eq!(b2["source"], "bravo.txt");

        // A JSON array: a replacement, an unchanged one, one the writer may
        // not replace (404 in its place), an id given twice (the second is
        // refused), and a new one; the rest are written.
        let other = hs256(&claims("olga", "bank", &["ingester"], &["g9"]));
        let r = s
            .client
            .post(s.url("/v1/documents"))
            .bearer_auth(&ing)
            .json(&json!([
                {"id": "b1", "title": "Alpha", "text": "Alpha kestrel policy, revised: falcon.", "acl": {"groups": ["g1"]}},
                {"id": "b2", "title": "Bravo", "text": "Bravo kestrel procedure.", "acl": {"groups": ["g1"]}, "source": "bravo.txt"},
                {"id": "b6", "title": "Delta", "text": "Delta falcon note.", "acl": {"groups": ["g1"]}},
                {"id": "b6", "title": "Delta again", "text": "Delta twice.", "acl": {"groups": ["g1"]}},
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 207);
        let body = json(r).await;
        let statuses: Vec<u64> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, vec![200, 200, 201, 400], "{db:?}: {body}");
        assert_eq!(body["results"][0]["document"]["version"], 2);
        assert_eq!(body["results"][1]["document"]["unchanged"], true);
        assert_eq!(body["results"][3]["problem"]["field"], "id");
        let mut found = search(&s, &rd, "falcon").await;
        found.sort();
        assert_eq!(found, vec!["b1", "b6"], "{db:?}");
        let r = s
            .client
            .post(s.url("/v1/documents"))
            .bearer_auth(&other)
            .json(&json!([
                {"id": "b5", "title": "Charlie", "text": "Taken over.", "acl": {"groups": ["g9"]}},
                {"id": "b7", "title": "Echo", "text": "Echo osprey.", "acl": {"groups": ["g9"]}},
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 207);
        let body = json(r).await;
        assert_eq!(body["results"][0]["status"], 404, "{body}");
        assert_eq!(body["results"][1]["status"], 201, "{body}");
        assert_eq!(search(&s, &rd, "charlie").await, vec!["b5"], "b5 unchanged");

        // Whole-request errors: empty, not JSON, too many documents.
        let r = post_ndjson(&s, &ing, &[]).await;
        assert_eq!(r.status(), 400);
        assert_eq!(json(r).await["field"], "body");
        let r = s
            .client
            .post(s.url("/v1/documents"))
            .bearer_auth(&ing)
            .header("content-type", "application/json")
            .body("[{\"id\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"id": format!("m{i}"), "title": "M", "text": "m", "acl": {"groups": ["g1"]}}))
            .collect();
        let r = post_ndjson(&s, &ing, &many).await;
        assert_eq!(r.status(), 413);
        assert_eq!(json(r).await["field"], "body");
        let listed = json(s.get("/v1/documents?limit=1000", Some(&rd)).await).await;
        assert_eq!(listed["documents"].as_array().unwrap().len(), 4, "{db:?}");

        // One audit record per bulk request, naming every document.
        let records = s.audit_records();
        let bulk = records
            .iter()
            .find(|r| {
                r["action"] == "document.write"
                    && r["document_ids"] == json!(["b1", "b2", "b3", "b5"])
            })
            .unwrap_or_else(|| panic!("no audit record of the first bulk write"));
        assert_eq!(bulk["details"]["failed"], 2, "{bulk}");
        s.verify_ok();
        drop(s);
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
    }
}

#[tokio::test]
async fn concurrent_single_writes_are_committed_together_and_all_land() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let ing = ingester(&["g1"]);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (client, url, ing) = (s.client.clone(), s.url("/v1/documents"), ing.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(ing)
                .json(&json!({"id": format!("c{i}"), "title": format!("C{i}"), "text": format!("Concurrent heron number {i}."), "acl": {"groups": ["g1"]}}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let found = search(&s, &reader(&["g1"]), "heron").await;
    assert_eq!(found.len(), 12);
    s.verify_ok();
}

/// A bulk write's embedding (seconds) happens outside the catalog
/// transaction: SQLite takes one writer at a time and the audit trail
/// writes there too, so while the batch embedded inside the transaction,
/// every audited request waited past SQLite's busy timeout (5 s) and got a
/// 503. Searches made during a long bulk write are answered. And a bulk
/// request is answered when its own batch is written: the first one here
/// used to wait for the second, queued behind it, as well.
#[tokio::test]
async fn requests_during_a_long_bulk_write_are_answered() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let (ing, rd) = (ingester(&["g1"]), reader(&["g1"]));
    let words = [
        "liquidity",
        "treasury",
        "ward",
        "sepsis",
        "ledger",
        "audit",
        "dose",
        "approval",
        "deposit",
        "triage",
        "custody",
        "nurse",
        "capital",
        "infusion",
        "settlement",
    ];
    // Chunks of several hundred tokens: the first request's (about 100)
    // take over 5 s to embed on two cores.
    let docs = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let text: Vec<&str> = (0..400)
                    .map(|j| words[(i * 7 + j * j) % words.len()])
                    .collect();
                json!({"id": format!("{prefix}{i}"), "title": format!("Long {i}"), "text": text.join(" "), "acl": {"groups": ["g1"]}})
            })
            .collect()
    };
    let started = std::time::Instant::now();
    let bulk = |docs: Vec<Value>| {
        let (client, url, token) = (s.client.clone(), s.url("/v1/documents"), ing.clone());
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&docs)
                .send()
                .await
                .unwrap();
            let done = std::time::Instant::now();
            (r.status().as_u16(), r.json::<Value>().await.unwrap(), done)
        })
    };
    let first = bulk(docs("long", 32));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let second = bulk(docs("later", 16));
    let mut searched = 0;
    while !(first.is_finished() && second.is_finished()) {
        // Asserts 200: each search is audited before it is answered.
        search(&s, &rd, "liquidity").await;
        searched += 1;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (status, body, first_done) = first.await.unwrap();
    assert_eq!((status, &body["written"]), (207, &json!(32)), "{body}");
    let (status, body, second_done) = second.await.unwrap();
    assert_eq!((status, &body["written"]), (207, &json!(16)), "{body}");
    let (a, b) = (
        (first_done - started).as_secs_f64(),
        (second_done - started).as_secs_f64(),
    );
    eprintln!(
        "bulk writes answered after {a:.1} s (32 documents) and {b:.1} s (16 queued behind); {searched} searches answered meanwhile"
    );
    assert!(
        searched > 0,
        "the bulk writes ended before a search was made"
    );
    assert!(
        a + 1.0 < b,
        "the first bulk write waited for the second: answered at {a:.1} s, the second at {b:.1} s"
    );
    assert_eq!(search(&s, &rd, "liquidity").await.len(), 20);
    s.verify_ok();
}
