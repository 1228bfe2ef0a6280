//! Authentication: every forged, stale or malformed token is a 401 problem
//! that never echoes the token, is audited with its reason, and leaves the
//! server answering.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::*;

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn valid_tokens_of_each_kind_are_accepted() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let c = claims("alice", "bank", &["reader"], &["treasury", "risk"]);
    for t in [
        hs256(&c),
        signed(Algorithm::RS256, "rsa-1.pem", Some("rsa-1"), &c),
        signed(Algorithm::ES256, "ec-1.pem", Some("ec-1"), &c),
    ] {
        let r = s.get("/v1/whoami", Some(&t)).await;
        assert_eq!(r.status(), 200);
        let p = json(r).await;
        assert_eq!(p["subject"], "alice");
        assert_eq!(p["tenant"], "bank");
        assert_eq!(p["roles"], json!(["reader"]));
        assert_eq!(p["groups"], json!(["risk", "treasury"]));
    }
}

#[tokio::test]
async fn hostile_tokens_are_401_audited_and_never_echoed() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let now = now();
    let good = claims("mallory", "bank", &["admin"], &[]);
    let rsa_public = std::fs::read(fixtures().join("keys/rsa-1.pub.pem")).unwrap();
    let mut key_confusion_header = Header::new(Algorithm::HS256);
    key_confusion_header.kid = Some("rsa-1".into());
    let key_confusion = jsonwebtoken::encode(
        &key_confusion_header,
        &good,
        &EncodingKey::from_secret(&rsa_public),
    )
    .unwrap();
    let mut expired = good.clone();
    expired["exp"] = json!(now - 3600);
    let mut early = good.clone();
    early["nbf"] = json!(now + 3600);
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    // Signed by rsa-2 but claiming to be rsa-1.
    let bad_signature = signed(Algorithm::RS256, "rsa-2.pem", Some("rsa-1"), &good);
    let unknown_kid = signed(Algorithm::RS256, "rsa-2.pem", Some("no-such-key"), &good);
    let oversized = {
        let header = json!({"alg": "HS256", "typ": "JWT", "pad": "x".repeat(10_000)});
        format!("{}.{}.c2ln", b64(&header), b64(&good))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "token_malformed"),
        (
            "HS256 signed with the RSA public key",
            key_confusion,
            "token_signature",
        ),
        ("expired", hs256(&expired), "token_expired"),
        ("not yet valid", hs256(&early), "token_not_yet_valid"),
        ("wrong issuer", hs256(&wrong_iss), "token_issuer"),
        ("wrong audience", hs256(&wrong_aud), "token_audience"),
        ("bad signature", bad_signature, "token_signature"),
        ("unknown kid", unknown_kid, "token_unknown_key"),
        (
            "malformed base64",
            "eyJhbGciOiJIUzI1NiJ9.!!!not-base64!!!.sig".into(),
            "token_malformed",
        ),
        ("oversized header", oversized, "token_too_large"),
    ];
    for (name, tok, _) in &cases {
        let rid = format!("hostile-{}", name.replace(' ', "-"));
        let r = s
            .client
            .get(s.url("/v1/whoami"))
            .bearer_auth(tok)
            .header("x-request-id", &rid)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let body = r.text().await.unwrap();
        let sig = tok.rsplit('.').next().unwrap_or_default();
        assert!(!body.contains(tok.as_str()), "{name}: token echoed");
        if sig.len() > 8 {
            assert!(!body.contains(sig), "{name}: signature echoed");
        }
    }
    // No Authorization at all, and a non-bearer scheme.
    assert_eq!(s.get("/v1/whoami", None).await.status(), 401);
    let r = s
        .client
        .get(s.url("/v1/whoami"))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Still answering.
    assert_eq!(s.get("/healthz", None).await.status(), 200);
    assert_eq!(
        s.get("/v1/whoami", Some(&token(&["reader"])))
            .await
            .status(),
        200
    );

    // Every denial is audited, with its reason.
    let records = s.audit_records();
    for (name, _, reason) in &cases {
        let rid = format!("hostile-{}", name.replace(' ', "-"));
        let rec = records
            .iter()
            .find(|r| r["request_id"] == rid.as_str())
            .unwrap_or_else(|| panic!("{name}: no audit record"));
        assert_eq!(rec["status"], 401, "{name}");
        assert_eq!(rec["reason"], *reason, "{name}");
        assert_eq!(rec["subject"], serde_json::Value::Null, "{name}");
    }
    s.verify_ok();
}

#[tokio::test]
async fn roles_are_least_privilege_and_denials_audited() {
    let (s, _) = Server::start(Db::Sqlite).await;
    let reader = token(&["reader"]);
    let auditor = token(&["auditor"]);
    let admin = token(&["admin"]);
    let nobody = token(&[]);
    assert_eq!(s.get("/v1/whoami", Some(&nobody)).await.status(), 200);
    assert_eq!(s.get("/v1/audit/events", Some(&reader)).await.status(), 403);
    assert_eq!(s.get("/v1/audit/verify", Some(&nobody)).await.status(), 403);
    assert_eq!(
        s.get("/v1/audit/events", Some(&auditor)).await.status(),
        200
    );
    assert_eq!(s.get("/v1/audit/events", Some(&admin)).await.status(), 200);
    let r = s
        .client
        .post(s.url("/v1/audit/prune"))
        .bearer_auth(&auditor)
        .json(&json!({"before": "2020-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = json(r).await;
    assert_eq!(body["code"], "forbidden");
    let denied: Vec<_> = s
        .audit_records()
        .into_iter()
        .filter(|r| r["status"] == 403)
        .collect();
    assert_eq!(denied.len(), 3);
    assert!(
        denied
            .iter()
            .all(|r| r["reason"].as_str().unwrap().starts_with("missing_role:"))
    );
}

#[tokio::test]
async fn production_mode_refuses_hs256() {
    let opts = Options {
        default_auth: false,
        extra: format!(
            "[auth]\ndevelopment = false\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
            fixtures().join("keys/jwks.json").display()
        ),
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let c = claims("alice", "bank", &["reader"], &[]);
    assert_eq!(s.get("/v1/whoami", Some(&hs256(&c))).await.status(), 401);
    let rs = signed(Algorithm::RS256, "rsa-1.pem", Some("rsa-1"), &c);
    assert_eq!(s.get("/v1/whoami", Some(&rs)).await.status(), 200);
    // Issuer and audience are required claims outside development.
    let mut no_aud = c.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let t = signed(Algorithm::RS256, "rsa-1.pem", Some("rsa-1"), &no_aud);
    assert_eq!(s.get("/v1/whoami", Some(&t)).await.status(), 401);
    // `sovra token` refuses without a development secret.
    let out = s.cli(&["token", "--roles", "reader"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no development secret"));
    // Nor does the sign-in page's development token route exist.
    let r = s
        .client
        .post(s.url("/v1/dev/token"))
        .json(&serde_json::json!({"sub": "mallory", "tenant": "bank", "roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A JWKS endpoint on loopback whose document can be swapped, counting fetches.
pub struct JwksServer {
    pub url: String,
    pub doc: Arc<Mutex<String>>,
    pub hits: Arc<AtomicUsize>,
}

pub fn jwks_server(initial: &str) -> JwksServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    let doc = Arc::new(Mutex::new(
        std::fs::read_to_string(fixtures().join("keys").join(initial)).unwrap(),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, h) = (doc.clone(), hits.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            h.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().unwrap().clone();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    JwksServer { url, doc, hits }
}

#[tokio::test]
async fn jwks_url_rotation_by_kid_with_rate_limited_refetch() {
    let jwks = jwks_server("jwks.json");
    let opts = Options {
        default_auth: false,
        extra: format!(
            "[auth]\ndevelopment = false\njwks_url = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_refetch_interval_secs = 2\n",
            jwks.url
        ),
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let c = claims("alice", "bank", &["reader"], &[]);
    let old = signed(Algorithm::RS256, "rsa-1.pem", Some("rsa-1"), &c);
    let new = signed(Algorithm::RS256, "rsa-2.pem", Some("rsa-2"), &c);
    assert_eq!(s.get("/v1/whoami", Some(&old)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The IdP has not published rsa-2 yet: refused; a burst of unknown kids
    // causes at most one refetch per interval.
    let before = jwks.hits.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(s.get("/v1/whoami", Some(&new)).await.status(), 401);
    }
    let fetched = jwks.hits.load(Ordering::SeqCst) - before;
    assert!(fetched <= 1, "refetched {fetched} times in one interval");
    // The IdP rotates: after the interval, the new kid is found without a restart.
    *jwks.doc.lock().unwrap() =
        std::fs::read_to_string(fixtures().join("keys/jwks-rotated.json")).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.get("/v1/whoami", Some(&new)).await.status(), 200);
    assert_eq!(s.get("/v1/whoami", Some(&old)).await.status(), 200);
}

#[tokio::test]
async fn claim_paths_map_keycloak_tokens() {
    let opts = Options {
        extra: "[auth.claims]\nroles = [\"realm_access.roles\"]\ntenant = \"org\"\n\n[auth.role_map]\n\"sovra-auditor\" = \"auditor\"\n".into(),
        ..Options::new(Db::Sqlite)
    };
    let (s, _) = Server::start_opts(opts).await;
    let now = now();
    let c = json!({"sub": "kc-user", "org": "hospital", "realm_access": {"roles": ["sovra-auditor", "offline_access"]},
                    "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
    let t = signed(Algorithm::ES256, "ec-1.pem", Some("ec-1"), &c);
    let p = json(s.get("/v1/whoami", Some(&t)).await).await;
    assert_eq!(p["tenant"], "hospital");
    assert_eq!(p["roles"], json!(["auditor"]));
    assert_eq!(s.get("/v1/audit/verify", Some(&t)).await.status(), 200);
}
