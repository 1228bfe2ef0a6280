//! Regression tests for the hardening review's findings, one per finding and
//! named after it, each against the real binary: the server stays up and
//! every refused request leaves its audit record.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

/// The hostile files, written by `tests/hostile/make.py` into a temporary folder.
fn hostile() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = fixtures().join("../hostile/make.py");
    let python = std::env::var("SOVRA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.path().to_owned();
    (dir, path)
}

async fn upload(
    s: &Server,
    token: &str,
    file: Vec<u8>,
    name: &str,
    mime: &str,
    id: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(file)
                .file_name(name.to_owned())
                .mime_str(mime)
                .unwrap(),
        )
        .text("id", id.to_owned())
        .text("acl_groups", "g");
    s.client
        .post(s.url("/v1/documents"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn ingester() -> String {
    hs256(&claims("ivan", "bank", &["ingester"], &["g"]))
}

fn record<'a>(records: &'a [Value], request_id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no audit record for request {request_id}"))
}

/// Finding 1: a self-drawing PDF and 20,000 nested spans each overflowed the
/// stack and aborted the process, with no audit record.
/// Finding 2: a 200 KB PDF inflating to 200 MB was accepted.
/// Later, by fuzzing: a page that is its own parent kept the PDF extractor
/// looking for an inherited attribute forever (the worker's time limit ended
/// it); both PDFs are now refused by a structure check before extraction.
#[tokio::test]
async fn finding_01_02_hostile_uploads_are_refused_and_the_server_stays_up() {
    let (_dir, files) = hostile();
    let (s, _) = Server::start(Db::Sqlite).await;
    let pid = s.pid();
    let ing = ingester();
    let cases = [
        (
            "self-drawing.pdf",
            "application/pdf",
            422,
            "unprocessable_document",
        ),
        (
            "page-loop.pdf",
            "application/pdf",
            422,
            "unprocessable_document",
        ),
        (
            "inflate-bomb.pdf",
            "application/pdf",
            413,
            "payload_too_large",
        ),
        (
            "inflate-bomb.docx",
            sovra_ingest::DOCX_MIME,
            413,
            "payload_too_large",
        ),
    ];
    let mut refused = Vec::new();
    for (i, (name, mime, status, code)) in cases.into_iter().enumerate() {
        let bytes = std::fs::read(files.join(name)).unwrap();
        let r = upload(&s, &ing, bytes, name, mime, &format!("hostile{i}")).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body = json(r).await;
        assert_eq!(body["code"], code, "{name}: {body}");
        assert_eq!(s.get("/healthz", None).await.status(), 200, "{name}");
        refused.push((name, request_id, status));
    }
    // Deep nesting is not an error: the text is there, the stack untouched.
    let html = std::fs::read(files.join("nested-spans.html")).unwrap();
    let r = upload(&s, &ing, html, "nested.html", "text/html", "nested").await;
    assert_eq!(r.status(), 201);
    let found = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(hs256(&claims("rita", "bank", &["reader"], &["g"])))
        .json(&json!({"query": "deep text", "mode": "lexical"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(found).await["results"][0]["document_id"], "nested");

    assert_eq!(s.pid(), pid);
    let records = s.audit_records();
    for (name, request_id, status) in refused {
        let rec = record(&records, &request_id);
        assert_eq!(rec["status"], status, "{name}");
        assert_eq!(rec["action"], "document.write", "{name}");
    }
    s.verify_ok();
}

async fn post_text(
    s: &Server,
    token: &str,
    id: &str,
    text: &str,
    groups: &[&str],
) -> reqwest::Response {
    s.client
        .post(s.url("/v1/documents"))
        .bearer_auth(token)
        .json(&json!({"id": id, "title": "t", "text": text, "acl": {"groups": groups}}))
        .send()
        .await
        .unwrap()
}

async fn delete(s: &Server, token: &str, id: &str) -> reqwest::Response {
    s.client
        .delete(s.url(&format!("/v1/documents/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Finding 3: an ingester could overwrite a same-tenant document it cannot
/// see (and confirm its content by an "unchanged" answer), and could not
/// delete a document it wrote for another group.
#[tokio::test]
async fn finding_03_replace_and_delete_follow_one_rule() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let ann = hs256(&claims("ann", "bank", &["ingester"], &["board"]));
    let eve = hs256(&claims("eve", "bank", &["ingester"], &["staff"]));
    let bob = hs256(&claims("bob", "bank", &["ingester"], &["board"]));
    let board = hs256(&claims("rita", "bank", &["reader"], &["board"]));
    let admin = hs256(&claims("root", "bank", &["admin", "ingester"], &[]));
    assert_eq!(
        post_text(&s, &ann, "minutes", "board minutes", &["board"])
            .await
            .status(),
        201
    );

    // Eve may not see it: a replace, a byte-identical replace and a delete
    // all answer 404, exactly as for an id nobody uses.
    let mut denied = Vec::new();
    for r in [
        post_text(&s, &eve, "minutes", "overwritten", &["staff"]).await,
        post_text(&s, &eve, "minutes", "board minutes", &["board"]).await,
        delete(&s, &eve, "minutes").await,
    ] {
        assert_eq!(r.status(), 404);
        denied.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        let body = json(r).await;
        assert_eq!(body["code"], "not_found");
        assert!(!body.to_string().contains("unchanged"));
    }
    let doc = json(s.get("/v1/documents/minutes", Some(&board)).await).await;
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["created_by"], "ann");

    // Bob, an ingester who may read it, may replace it.
    let r = post_text(&s, &bob, "minutes", "board minutes, amended", &["board"]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["version"], 2);

    // Ann writes a document for a group she is not in: she may still
    // delete what she wrote.
    assert_eq!(
        post_text(&s, &ann, "for-staff", "staff notice", &["staff"])
            .await
            .status(),
        201
    );
    assert_eq!(delete(&s, &ann, "for-staff").await.status(), 204);

    // The tenant's admin may remove what nobody else can see.
    assert_eq!(
        post_text(&s, &eve, "private", "eve's", &["staff"])
            .await
            .status(),
        201
    );
    assert_eq!(delete(&s, &admin, "private").await.status(), 204);

    let records = s.audit_records();
    for id in denied {
        assert_eq!(record(&records, &id)["status"], 404);
    }
    s.verify_ok();
}

async fn prune(s: &Server, token: &str, before: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/audit/prune"))
        .bearer_auth(token)
        .json(&json!({ "before": before }))
        .send()
        .await
        .unwrap()
}

fn verify_with(s: &Server, public_key: &str) -> std::process::Output {
    Command::new(bin())
        .args(["audit", "verify", "--config"])
        .arg(&s.config)
        .env("SOVRA__AUDIT__CHECKPOINT_PUBLIC_KEY", public_key)
        .output()
        .unwrap()
}

/// Finding 5: with retention set to keep forever, `before` = now pruned the
/// whole trail and verification stayed green; the signing key sat in the
/// data directory.
#[tokio::test]
async fn finding_05_the_audit_trail_cannot_be_emptied() {
    // Keep forever (the default): the API and the CLI refuse every prune.
    let (s, _) = Server::start(Db::Sqlite).await;
    let admin = token(&["admin"]);
    for _ in 0..3 {
        s.get("/v1/whoami", Some(&admin)).await;
    }
    let now = chrono::Utc::now().to_rfc3339();
    let r = prune(&s, &admin, &now).await;
    assert_eq!(r.status(), 409);
    let refused = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = json(r).await;
    assert_eq!(
        (&body["code"], &body["field"]),
        (&json!("conflict"), &json!("before"))
    );
    let out = s.cli(&["audit", "prune", "--before", &now]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep forever"));
    assert!(s.verify_ok()["checked"].as_i64().unwrap() >= 4);
    let records = s.audit_records();
    assert_eq!(record(&records, &refused)["reason"], "retention_unlimited");
    drop(s);

    // A key made by `sovra audit keygen`, outside the data directory.
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("checkpoint.key");
    let out = Command::new(bin())
        .args(["audit", "keygen", "--output"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // keygen never overwrites a key.
    let again = Command::new(bin())
        .args(["audit", "keygen", "--output"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(!again.status.success());

    // Retention of one day: `before` later than a day ago is refused.
    let opts = Options {
        env: vec![
            ("SOVRA__AUDIT__RETENTION_DAYS".into(), "1".into()),
            (
                "SOVRA__AUDIT__CHECKPOINT_KEY_FILE".into(),
                key_file.display().to_string(),
            ),
        ],
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    for _ in 0..3 {
        s.get("/v1/whoami", Some(&admin)).await;
    }
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r = prune(&s, &admin, &hour_ago).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["field"], "before");
    let two_days = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let r = prune(&s, &admin, &two_days).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["pruned"], 0);
    assert!(s.verify_ok()["checked"].as_i64().unwrap() >= 5);

    // The public key alone verifies (the verifying host holds no secret);
    // another key does not match checkpoints, and a malformed one is refused.
    assert!(verify_with(&s, &public).status.success());
    let out = verify_with(&s, "zz");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checkpoint_public_key"));
}

/// Finding 6: the shipped configuration was development mode with a fixed
/// secret, and development mode served any address: without a token,
/// `POST /v1/dev/token` minted an admin.
#[tokio::test]
async fn finding_06_development_mode_stays_on_this_machine() {
    let shipped = fixtures().join("../../config/sovra.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(
        text.contains("dev_secret = \"\""),
        "the shipped config holds no secret"
    );

    // Each installation makes its own secret, 0600, and keeps it.
    let token_in = |data: &std::path::Path| {
        let out = Command::new(bin())
            .args(["token", "--roles", "reader", "--config"])
            .arg(&shipped)
            .env("SOVRA__STORAGE__DATA_DIR", data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(data.join("dev-secret")).unwrap()
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let secret = token_in(a.path());
    assert_eq!(token_in(a.path()), secret);
    assert_ne!(token_in(b.path()), secret);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.path().join("dev-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Development mode on any non-loopback address does not start.
    let (s, _) = Server::start(Db::Sqlite).await;
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&s.config)
            .env("SOVRA__SERVER__LISTEN", listen)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{listen}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("auth.development"), "{listen}: {err}");
        assert!(!err.contains(DEV_SECRET), "the secret is never echoed");
    }
}

/// Finding 7: a request for `/v1/documents/=HYPERLINK(…)` was recorded as
/// is and exported as a live formula.
#[tokio::test]
async fn finding_07_exports_carry_no_live_formulas_and_ids_are_checked() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let rd = hs256(&claims(
        "=HYPERLINK(\"http://x\")",
        "bank",
        &["reader"],
        &["g"],
    ));
    for path in [
        "/v1/documents/=HYPERLINK(%22http:%2F%2Fevil%22)",
        "/v1/documents/+cmd",
        "/v1/documents/@SUM(1)",
    ] {
        let r = s.get(path, Some(&rd)).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(json(r).await["field"], "id", "{path}");
    }
    let r = s
        .client
        .delete(s.url("/v1/documents/-2+3"))
        .bearer_auth(ingester())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let id = "x".repeat(129);
    assert_eq!(
        s.get(&format!("/v1/documents/{id}"), Some(&rd))
            .await
            .status(),
        400
    );

    let out = s.cli(&["audit", "export", "--format", "csv"]);
    assert!(out.status.success());
    let csv = String::from_utf8_lossy(&out.stdout);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let mut cells = 0;
    for row in reader.records() {
        for cell in row.unwrap().iter() {
            cells += 1;
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "live formula in the export: {cell}"
            );
        }
    }
    assert!(cells > 0);
    assert!(csv.contains("'=HYPERLINK"), "the subject is kept, defused");
}

/// Finding 8: metadata and ACL lists had no size limits and are copied into
/// every chunk (432 KB of request grew the data directory by 25.6 MB).
#[tokio::test]
async fn finding_08_metadata_and_acl_sizes_are_bounded() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let ing = ingester();
    let post = |body: Value| {
        s.client
            .post(s.url("/v1/documents"))
            .bearer_auth(&ing)
            .json(&body)
            .send()
    };
    let many_keys: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let many_groups: Vec<String> = (0..257).map(|i| format!("g{i}")).collect();
    let cases = [
        (
            json!({"title": "t", "text": "x", "acl": {"groups": ["g"]}, "metadata": many_keys}),
            "metadata",
        ),
        (
            json!({"title": "t", "text": "x", "acl": {"groups": ["g"]}, "metadata": {"k": "v".repeat(513)}}),
            "metadata.k",
        ),
        (
            json!({"title": "t", "text": "x", "acl": {"groups": many_groups}}),
            "acl.groups",
        ),
        (
            json!({"title": "t", "text": "x", "acl": {"groups": ["g"], "users": ["u".repeat(129)]}}),
            "acl.users",
        ),
    ];
    for (body, field) in cases {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), 413, "{field}");
        let body = json(r).await;
        assert_eq!(body["field"], field);
        assert_eq!(body["code"], "payload_too_large");
    }
    // Multipart names its own fields.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
        )
        .text("acl_groups", many_groups.join(","));
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .bearer_auth(&ing)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(json(r).await["field"], "acl_groups");
    // At the limits, a document is stored.
    let full_keys: serde_json::Map<String, Value> = (0..32)
        .map(|i| (format!("k{i}"), json!("v".repeat(200))))
        .collect();
    let r =
        post(json!({"title": "t", "text": "x", "acl": {"groups": ["g"]}, "metadata": full_keys}))
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(s.get("/healthz", None).await.status(), 200);
}

/// Finding 9: JWKS was refetched only for an unknown `kid`, so a key the
/// identity provider removed kept working.
#[tokio::test]
async fn finding_09_a_removed_signing_key_stops_verifying() {
    let jwks = crate::auth::jwks_server("jwks-rotated.json");
    let opts = Options {
        default_auth: false,
        extra: format!(
            "[auth]\ndevelopment = false\njwks_url = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_refetch_interval_secs = 1\njwks_refresh_interval_secs = 1\n",
            jwks.url
        ),
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let c = claims("alice", "bank", &["reader"], &[]);
    let old = signed(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1.pem",
        Some("rsa-1"),
        &c,
    );
    let new = signed(
        jsonwebtoken::Algorithm::RS256,
        "rsa-2.pem",
        Some("rsa-2"),
        &c,
    );
    assert_eq!(s.get("/v1/whoami", Some(&old)).await.status(), 200);
    assert_eq!(s.get("/v1/whoami", Some(&new)).await.status(), 200);
    // The IdP removes rsa-1.
    let mut set: Value = serde_json::from_str(&jwks.doc.lock().unwrap()).unwrap();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "rsa-1");
    *jwks.doc.lock().unwrap() = set.to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(s.get("/v1/whoami", Some(&old)).await.status(), 401);
    assert_eq!(s.get("/v1/whoami", Some(&new)).await.status(), 200);

    // Outside development a JWKS URL must be https (plain http: loopback only).
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&s.config)
        .env("SOVRA__AUTH__JWKS_URL", "http://idp.example.com/certs")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwks_url"));
}

/// Finding 11: a dense search with an unusual metadata filter key answered
/// 500; every bad input is a 4xx problem naming the field.
#[tokio::test]
async fn finding_11_unusual_filter_keys_are_named_not_500() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .bearer_auth(ingester())
        .json(&json!({"id": "d", "title": "t", "text": "leave policy for staff", "acl": {"groups": ["g"]},
                      "metadata": {"dept-code_1": "hr", "部门": "人事"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rd = hs256(&claims("rita", "bank", &["reader"], &["g"]));
    let search = |mode: &'static str, filter: Value| {
        s.client
            .post(s.url("/v1/search"))
            .bearer_auth(&rd)
            .json(&json!({"query": "leave policy", "mode": mode, "filter": {"metadata": filter}}))
            .send()
    };
    for mode in ["lexical", "dense", "hybrid"] {
        for key in ["a b", "a.b", "x[0]", "\"q\"", "a\\b", ""] {
            let r = search(mode, json!({ key: "v" })).await.unwrap();
            assert_eq!(r.status(), 400, "{mode} {key:?}");
            assert_eq!(json(r).await["field"], format!("filter.metadata.{key}"));
        }
        for (key, value) in [("dept-code_1", "hr"), ("部门", "人事")] {
            let r = search(mode, json!({ key: value })).await.unwrap();
            assert_eq!(r.status(), 200, "{mode} {key}");
            assert_eq!(
                json(r).await["results"][0]["document_id"],
                "d",
                "{mode} {key}"
            );
        }
    }
    assert_eq!(s.get("/healthz", None).await.status(), 200);
}

fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Finding 10: chat without retrieval recorded no message text, system and
/// earlier turns were not recorded, a streamed answer's outcome record was
/// not fail-closed, every unauthenticated request cost a durable write
/// without limit, and `/metrics` was public.
#[tokio::test]
async fn finding_10_audit_gaps_are_closed() {
    let opts = Options {
        env: vec![("SOVRA__AUDIT__DENIALS_PER_MINUTE".into(), "5".into())],
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let t = hs256(&claims("rita", "bank", &["reader"], &["g"]));
    let chat = |stream: bool| {
        json!({
            "model": "sovra-tiny-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first turn"},
                {"role": "assistant", "content": "first reply"},
                {"role": "user", "content": "what is the leave policy"},
            ],
            "max_tokens": 8,
            "stream": stream,
            "sovra": {"retrieval": false},
        })
    };
    let post = |body: Value| {
        s.client
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&t)
            .json(&body)
            .send()
    };

    // Without retrieval the question is recorded by the query policy, and
    // every turn by its digest.
    let r = post(chat(false)).await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let records = s.audit_records();
    let rec = record(&records, &id);
    assert_eq!(
        rec["details"]["question"]["text"],
        "what is the leave policy"
    );
    let turns = rec["details"]["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0]["role"], "system");
    let digest = |text: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    assert_eq!(turns[0]["sha256"], digest("Be brief."));
    assert_eq!(turns[2]["sha256"], digest("first reply"));

    // A streamed answer whose outcome record cannot be committed ends with
    // an error event, never with its closing events.
    crate::audit::sql(
        &s,
        Db::Sqlite,
        "CREATE TRIGGER fail_outcome BEFORE INSERT ON audit_events WHEN NEW.action = 'chat.completed' BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .await
    .unwrap();
    let r = post(chat(true)).await.unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert!(!events.contains(&"[DONE]".to_owned()), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "audit_unavailable", "{events:?}");
    crate::audit::sql(&s, Db::Sqlite, "DROP TRIGGER fail_outcome")
        .await
        .unwrap();
    let r = post(chat(true)).await.unwrap();
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");

    // Failed authentication: five recorded one by one, then 429 with
    // Retry-After and no write, summed up in one record at shutdown.
    let before = s.audit_records().len();
    for i in 0..12 {
        let r = s.get("/v1/whoami", Some("not-a-token")).await;
        if i < 5 {
            assert_eq!(r.status(), 401, "attempt {i}");
        } else {
            assert_eq!(r.status(), 429, "attempt {i}");
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(s.audit_records().len(), before + 5);
    // A valid caller from the same address is not limited.
    assert_eq!(s.get("/v1/whoami", Some(&t)).await.status(), 200);

    // /metrics: loopback only without a token (this client is loopback).
    assert_eq!(s.get("/metrics", None).await.status(), 200);

    let mut s = s;
    let term = Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(s.terminate_wait().success());
    let records = s.audit_records();
    let summary = records
        .iter()
        .find(|r| r["action"] == "auth.denied.summary")
        .expect("a summary record");
    assert_eq!(summary["details"]["refused"], 7);
    assert_eq!(summary["status"], 429);
    s.verify_ok();
}

/// `/metrics` with a token: only its bearer scrapes.
#[tokio::test]
async fn finding_10_metrics_need_the_scrape_token() {
    let token = "scrape-token-0123456789";
    let opts = Options {
        env: vec![("SOVRA__TELEMETRY__METRICS_TOKEN".into(), token.into())],
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    assert_eq!(s.get("/metrics", None).await.status(), 404);
    assert_eq!(
        s.get("/metrics", Some("wrong-token-0123456789"))
            .await
            .status(),
        404
    );
    let r = s.get("/metrics", Some(token)).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sovra_"));
}

/// Finding 4: document ids were global across tenants: tenant B writing an
/// id tenant A uses got 409 "belongs to another tenant", which revealed it
/// and let B squat ids.
#[tokio::test]
async fn finding_04_document_ids_belong_to_their_tenant() {
    for db in [Db::Sqlite, Db::Postgres] {
        let (s, pg) = Server::start(db).await;
        let bank = hs256(&claims("ann", "bank", &["ingester"], &["g"]));
        let clinic = hs256(&claims("cid", "clinic", &["ingester"], &["g"]));
        let bank_reader = hs256(&claims("rita", "bank", &["reader"], &["g"]));
        let clinic_reader = hs256(&claims("ria", "clinic", &["reader"], &["g"]));
        assert_eq!(
            post_text(&s, &bank, "policy", "bank mortgage policy", &["g"])
                .await
                .status(),
            201
        );
        // Same id, same text, other tenant: its own document, nothing revealed.
        let r = post_text(&s, &clinic, "policy", "bank mortgage policy", &["g"]).await;
        assert_eq!(r.status(), 201, "{db:?}");
        let body = json(r).await;
        assert_eq!(
            (body["version"].as_i64(), body["created"].as_bool()),
            (Some(1), Some(true))
        );
        assert_eq!(
            post_text(&s, &clinic, "policy", "clinic triage policy", &["g"])
                .await
                .status(),
            200
        );

        let search = |token: String, q: &'static str, mode: &'static str| {
            let s = &s;
            async move { snippets(&search_hits(s, &token, q, mode).await) }
        };
        for mode in ["lexical", "dense", "hybrid"] {
            let b = search(bank_reader.clone(), "mortgage policy", mode).await;
            assert!(
                b.iter().all(|t| t.contains("bank mortgage")),
                "{mode}: {b:?}"
            );
            assert!(!b.is_empty(), "{mode}");
            let c = search(clinic_reader.clone(), "triage policy", mode).await;
            assert!(
                c.iter().all(|t| t.contains("clinic triage")),
                "{mode}: {c:?}"
            );
            assert!(!c.is_empty(), "{mode}");
        }
        let doc = json(s.get("/v1/documents/policy", Some(&bank_reader)).await).await;
        assert_eq!(
            (doc["tenant"].as_str(), doc["version"].as_i64()),
            (Some("bank"), Some(1))
        );
        // The clinic deletes its own; the bank's stays, in both indexes.
        assert_eq!(delete(&s, &clinic, "policy").await.status(), 204);
        assert_eq!(
            s.get("/v1/documents/policy", Some(&clinic_reader))
                .await
                .status(),
            404
        );
        assert_eq!(
            s.get("/v1/documents/policy", Some(&bank_reader))
                .await
                .status(),
            200
        );
        for mode in ["lexical", "dense"] {
            assert!(
                !search(bank_reader.clone(), "mortgage policy", mode)
                    .await
                    .is_empty(),
                "{mode}"
            );
            assert!(
                search(clinic_reader.clone(), "triage policy", mode)
                    .await
                    .is_empty(),
                "{mode}"
            );
        }
        s.verify_ok();
        finish(s, pg).await;
    }
}

/// Finding 4, existing data: a catalog written under the global-id schema
/// (migrations 0001 and 0002) is migrated to (tenant, id) keys at start-up,
/// and reconciliation rebuilds both indexes from it.
#[tokio::test]
async fn finding_04_existing_documents_migrate_to_tenant_keys() {
    use sqlx::Connection;
    for db in [Db::Sqlite, Db::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}/old.db?mode=rwc", dir.path().display()),
                None,
            ),
            Db::Postgres => {
                let pg = pg_fresh().await;
                (pg.url.clone(), Some(pg))
            }
        };
        // The schema as it was: only the first two migrations, applied by
        // sqlx from copies of the committed files (same checksums).
        let folder = match db {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        };
        let old = dir.path().join("migrations");
        std::fs::create_dir_all(&old).unwrap();
        for f in ["0001_audit.sql", "0002_catalog.sql"] {
            std::fs::copy(
                fixtures().join("../../migrations").join(folder).join(f),
                old.join(f),
            )
            .unwrap();
        }
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        let rows = [
            "INSERT INTO documents (id, tenant, title, source, content_type, content_hash, version, acl, metadata, created_by, created_us, updated_us, chunk_count, bytes) VALUES ('legacy', 'bank', 'Legacy policy', 'api', 'text/plain', 'h', 3, '{\"groups\":[\"g\"],\"users\":[]}', '{\"dept\":\"hr\"}', 'ann', 1, 2, 1, 40)",
            "INSERT INTO document_acl (document_id, kind, principal) VALUES ('legacy', 'g', 'g')",
            "INSERT INTO document_metadata (document_id, key, value) VALUES ('legacy', 'dept', 'hr')",
            "INSERT INTO chunks (chunk_id, document_id, ordinal, text, tokens) VALUES ('legacy:0:abc', 'legacy', 0, 'sabbatical leave after seven years of service', 9)",
        ];
        match db {
            Db::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                migrator.run(&mut c).await.unwrap();
                for r in rows {
                    sqlx::query(r).execute(&mut c).await.unwrap();
                }
            }
            Db::Postgres => {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                migrator.run(&mut c).await.unwrap();
                for r in rows {
                    sqlx::query(r).execute(&mut c).await.unwrap();
                }
            }
        }

        let s = Server::start_with(Options::new(db), Some(url)).await;
        let reader = hs256(&claims("rita", "bank", &["reader"], &["g"]));
        let doc = json(s.get("/v1/documents/legacy", Some(&reader)).await).await;
        assert_eq!(
            (doc["tenant"].as_str(), doc["version"].as_i64()),
            (Some("bank"), Some(3)),
            "{db:?}"
        );
        for mode in ["lexical", "dense"] {
            let r = s
                .client
                .post(s.url("/v1/search"))
                .bearer_auth(&reader)
                .json(&json!({"query": "sabbatical leave", "mode": mode, "filter": {"metadata": {"dept": "hr"}}}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                json(r).await["results"][0]["document_id"],
                "legacy",
                "{db:?} {mode}"
            );
        }
        // The migrated document is replaced under the new keys, and another
        // tenant may now use its id.
        let bank = hs256(&claims("ann", "bank", &["ingester"], &["g"]));
        let r = post_text(
            &s,
            &bank,
            "legacy",
            "sabbatical leave after five years",
            &["g"],
        )
        .await;
        assert_eq!(json(r).await["version"], 4);
        let clinic = hs256(&claims("cid", "clinic", &["ingester"], &["g"]));
        assert_eq!(
            post_text(&s, &clinic, "legacy", "clinic text", &["g"])
                .await
                .status(),
            201
        );
        drop(s);
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
    }
}
