//! The documented production database set-up, followed as deploy/README.md
//! says: `sovra migrate` as the owner, `deploy/postgres/roles.sql`, then the
//! gateway as `sovra_app` with `database.migrate_on_start = false`.

use std::process::Command;

use serde_json::json;
use sqlx::Connection;

use crate::support::*;

#[tokio::test]
async fn the_documented_postgres_roles_run_the_gateway() {
    let pg = pg_fresh().await;
    let data = tempfile::tempdir().unwrap();
    let migrate = Command::new(bin())
        .arg("migrate")
        .env("SOVRA__DATABASE__URL", &pg.url)
        .env("SOVRA__AUTH__DEVELOPMENT", "true")
        .env("SOVRA__STORAGE__DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    // Twice: the script is safe to run again after a new migration.
    for _ in 0..2 {
        let out = Command::new("psql")
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "app_password=app-secret",
                "-q",
                "-f",
            ])
            .arg(fixtures().join("../../deploy/postgres/roles.sql"))
            .arg(&pg.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let app_url = pg
        .url
        .replacen("://postgres@", "://sovra_app:app-secret@", 1);
    assert_ne!(app_url, pg.url, "the admin URL names the postgres user");
    let opts = Options {
        env: vec![("SOVRA__DATABASE__MIGRATE_ON_START".into(), "false".into())],
        ..Options::new(Db::Postgres)
    };
    let s = Server::start_with(opts, Some(app_url.clone())).await;
    assert_eq!(s.get("/readyz", None).await.status(), 200);
    let ing = hs256(&claims("ann", "bank", &["ingester"], &["g"]));
    let rd = hs256(&claims("rita", "bank", &["reader"], &["g"]));
    let post = |text: &'static str| {
        s.client
            .post(s.url("/v1/documents"))
            .bearer_auth(&ing)
            .json(&json!({"id": "p", "title": "t", "text": text, "acl": {"groups": ["g"]}}))
            .send()
    };
    assert_eq!(
        post("overtime is paid at time and a half")
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(post("overtime is paid double").await.unwrap().status(), 200);
    let r = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(&rd)
        .json(&json!({"query": "overtime", "mode": "hybrid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["results"][0]["document_id"], "p");
    let r = s
        .client
        .delete(s.url("/v1/documents/p"))
        .bearer_auth(&ing)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The gateway's role appends to the audit trail and cannot remove from it.
    let mut app = sqlx::PgConnection::connect(&app_url).await.unwrap();
    for statement in [
        "DELETE FROM audit_events",
        "UPDATE audit_events SET action = 'x'",
        "TRUNCATE audit_events",
        "DELETE FROM audit_checkpoints",
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "DROP TRIGGER audit_events_append_only ON audit_events",
        "DROP TABLE documents",
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut app)
            .await
            .expect_err(statement);
        let msg = err.to_string();
        assert!(
            msg.contains("permission denied") || msg.contains("must be owner"),
            "{statement}: {msg}"
        );
    }
    s.verify_ok();
    drop(s);
    pg.drop_db().await;
}

/// Every kustomize overlay renders with `kubectl kustomize` and holds what a
/// production deployment needs (tests/deploy/check_manifests.py: probes,
/// non-root, read-only root, resources, secrets only by reference, GPU
/// overlay on CUDA).
#[test]
fn the_kubernetes_overlays_render_and_hold() {
    let python = std::env::var("SOVRA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(fixtures().join("../deploy/check_manifests.py"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.matches("every check holds").count(), 3, "{report}");
}

/// The configuration the image and the manifests ship is valid as it
/// stands: production mode, listening beyond loopback, PostgreSQL and a
/// Qdrant server, following the change sequence.
#[test]
fn the_cluster_configuration_is_valid() {
    let path = fixtures().join("../../deploy/kubernetes/base/sovra.toml");
    let s = sovra_config::Settings::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.auth.development);
    assert!(!s.server.listen.ip().is_loopback());
    assert_eq!(s.vectors.backend, sovra_config::VectorBackend::Qdrant);
    assert!(!s.database.migrate_on_start);
    assert!(s.replication.follow);
}
