//! The web pages: served from the binary with a Content Security Policy and
//! security headers on every response, and driven end to end in headless
//! Chromium (tests/web/pages.mjs, playwright-core with Debian's chromium)
//! against the real gateway and the real model.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn pages_are_built_in_with_security_headers_and_the_dev_token_is_audited() {
    let (s, pg) = Server::start(Db::Sqlite).await;
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
    ] {
        let r = s.get(path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], ct);
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    let html = s.get("/", None).await.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    let handler = html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(!handler, "no inline event handler attributes");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no asset from elsewhere"
    );
    assert_eq!(s.get("/assets/other.js", None).await.status(), 404);
    // API responses carry the policy too.
    let r = s.get("/v1/whoami", Some(&token(&["reader"]))).await;
    assert!(r.headers().contains_key("content-security-policy"));

    // The development token route: bad input is named; a minted token works
    // and its minting is on the record.
    let post = |body: serde_json::Value| s.client.post(s.url("/v1/dev/token")).json(&body).send();
    let r = post(json!({"sub": "a b", "tenant": "bank", "roles": ["reader"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["field"], "sub");
    let r = post(json!({"sub": "dana", "tenant": "bank", "roles": ["wizard"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r =
        post(json!({"sub": "dana", "tenant": "bank", "roles": ["reader"], "groups": ["staff"]}))
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let t = json(r).await["token"].as_str().unwrap().to_owned();
    let who = json(s.get("/v1/whoami", Some(&t)).await).await;
    assert_eq!(who["subject"], "dana");
    assert_eq!(who["groups"], json!(["staff"]));
    let records = s.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "dev.token" && r["subject"] == "dana")
    );
    assert!(
        !records
            .iter()
            .any(|r| r["action"] == "page" || r["action"] == "asset")
    );
    s.verify_ok();
    finish(s, pg).await;
}

#[tokio::test]
async fn staff_and_auditors_use_the_pages_in_a_real_browser() {
    let chromium = std::env::var("SOVRA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run the tests through scripts/test, which installs Debian's chromium"
    );
    let web = fixtures().join("../web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "tests/web/node_modules is missing: run the tests through scripts/test (npm ci in tests/web)"
    );
    let opts = Options {
        generator:
            "[generator]\nmodel = \"qwen2.5-coder-0.5b-instruct\"\ndefault_max_tokens = 64\n".into(),
        ..Options::new(Db::Sqlite)
    };
    let (s, pg) = Server::start_opts(opts).await;
    let ing = hs256(&claims("ivan", "bank", &["ingester"], &[]));
    let limits =
        std::fs::read_to_string(fixtures().join("../../demo/corpus/treasury/fx-dealing-limits.md"))
            .unwrap();
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .bearer_auth(&ing)
        .json(&json!({"id": "treasury-fx-dealing-limits", "title": "FX Dealing Limits", "text": limits, "acl": {"groups": ["treasury"]}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let mut expired = claims("rita", "bank", &["reader"], &["treasury"]);
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    let envs = [
        ("SOVRA_BASE", s.base.clone()),
        ("SOVRA_SCREENSHOTS", shots.display().to_string()),
        ("SOVRA_CHROMIUM", chromium),
        (
            "READER_TOKEN",
            hs256(&claims("rita", "bank", &["reader"], &["treasury"])),
        ),
        (
            "INGESTER_TOKEN",
            hs256(&claims("ivan", "bank", &["ingester"], &["staff"])),
        ),
        (
            "AUDITOR_TOKEN",
            hs256(&claims("alice", "bank", &["auditor"], &[])),
        ),
        ("EXPIRED_TOKEN", hs256(&expired)),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("node");
        cmd.arg(web.join("pages.mjs")).current_dir(&web);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("pages: ok"), "{stdout}");
    println!("{stdout}");
    for name in [
        "01-signin",
        "02-ask",
        "03-citation",
        "05-reader-denied-audit",
        "06-documents",
        "08-audit",
        "09-audit-detail",
        "10-expired",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
    s.verify_ok();
    finish(s, pg).await;
}
