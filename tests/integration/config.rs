//! Configuration errors stop start-up with exit code 2 and name the key.

use std::process::Command;

use crate::support::*;

fn run(args: &[&str], toml: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sovra.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(args).arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn unknown_keys_and_bad_values_exit_2_naming_the_key() {
    let dev = default_auth_toml();
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            format!("{dev}[server]\nlisen = \"127.0.0.1:1\"\n"),
            vec![],
            "lisen",
        ),
        (
            format!("{dev}[server]\nlisten = \"not an address\"\n"),
            vec![],
            "server.listen",
        ),
        (dev.clone(), vec![("SOVRA__SERVER__PORTT", "1")], "portt"),
        (
            dev.clone(),
            vec![("SOVRA__AUDIT__BATCH_MAX", "lots")],
            "audit.batch_max",
        ),
        (
            dev.clone(),
            vec![("SOVRA__DATABASE__URL", "mysql://x")],
            "database.url",
        ),
        (
            "[auth]\njwks_file = \"/x.json\"\n".into(),
            vec![],
            "auth.issuer",
        ),
    ];
    for (toml, env, key) in cases {
        let out = run(&["migrate"], &toml, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(key), "{key}: {err}");
    }
    let out = Command::new(bin())
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn env_overrides_apply_and_secrets_are_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}[storage]\ndata_dir = \"{}\"\n",
        default_auth_toml(),
        dir.path().display()
    );
    let out = run(
        &["token", "--sub", "bob", "--roles", "auditor", "--ttl", "5m"],
        &toml,
        &[],
    );
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3);
    // An override that makes the secret too short is refused without printing it.
    let out = run(
        &["token"],
        &toml,
        &[("SOVRA__AUTH__DEV_SECRET", "hunter2-short")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.dev_secret") && !err.contains("hunter2"),
        "{err}"
    );
    let out = run(&["token", "--roles", "superuser"], &toml, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}

#[test]
fn missing_models_stop_start_up_naming_the_setup_command() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[models]\ndir = \"{}\"\n",
        default_auth_toml(),
        dir.path().join("data").display(),
        dir.path().join("no-models").display()
    );
    let out = run(&["serve"], &toml, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/setup-models"), "{err}");
}
