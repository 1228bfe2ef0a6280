//! Starting the real binary, fresh databases, and test tokens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const DEV_SECRET: &str = "integration-test-development-secret-0123456789";
pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "sovra-test";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sovra")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Which audit database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Db; 2] = [Db::Sqlite, Db::Postgres];

/// A fresh PostgreSQL database, dropped by `drop_db`.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

pub fn pg_admin_url() -> String {
    std::env::var("SOVRA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn pg_fresh() -> PgDb {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for these tests: {e}"));
    let name = format!("sovra_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    PgDb {
        url: format!("{base}/{name}"),
        name,
    }
}

impl PgDb {
    pub async fn drop_db(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// Holds the data directory until the server is dropped.
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db_url: String,
    /// Environment of the server process (changed between restarts by some tests).
    pub env: Vec<(String, String)>,
    pub client: reqwest::Client,
    /// Every line the server printed on stdout, across restarts.
    pub stdout: Arc<Mutex<Vec<String>>>,
}

pub struct Options {
    pub db: Db,
    /// Extra TOML appended to the test configuration.
    pub extra: String,
    pub env: Vec<(String, String)>,
    /// Include the default [auth] section (development + JWKS file).
    pub default_auth: bool,
    /// The [generator] section; default: the tiny test model.
    pub generator: String,
}

/// The tiny random-weight test model (tests/fixtures/tiny-llm). Its
/// random text is supported by no source and its reply to the answer's
/// check is random too, so answers from sources keep it
/// (`answer.refuse_unsupported = false`, `answer.verify = false`): the
/// protocol tests compare it streamed and not, in both APIs.
pub fn tiny_generator_toml() -> String {
    format!(
        "[generator]\ndir = \"{}\"\nmax_tokens_limit = 3000\ndefault_max_tokens = 48\n\n[answer]\nrefuse_unsupported = false\nverify = false\n",
        fixtures().join("tiny-llm").display()
    )
}

impl Options {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            extra: String::new(),
            env: Vec::new(),
            default_auth: true,
            generator: tiny_generator_toml(),
        }
    }
}

pub fn default_auth_toml() -> String {
    format!(
        "[auth]\ndevelopment = true\ndev_secret = \"{DEV_SECRET}\"\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nleeway_secs = 5\n",
        fixtures().join("keys/jwks.json").display()
    )
}

impl Server {
    /// Starts against `db_url` (None: SQLite in the data dir).
    pub async fn start_with(opts: Options, db_url: Option<String>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let db_url =
            db_url.unwrap_or_else(|| format!("sqlite://{}/sovra.db?mode=rwc", data.display()));
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nshutdown_timeout_secs = 10\n\n[storage]\ndata_dir = \"{}\"\n\n[database]\nurl = \"{db_url}\"\n\n[telemetry]\nlog_level = \"warn\"\n\n",
            data.display()
        );
        if opts.default_auth {
            toml.push_str(&default_auth_toml());
        }
        toml.push_str(&opts.generator);
        toml.push('\n');
        toml.push_str(&opts.extra);
        let config = dir.path().join("sovra.toml");
        std::fs::write(&config, toml).unwrap();
        let mut s = Server {
            child: None,
            base: String::new(),
            _dir: dir,
            config,
            db_url,
            env: opts.env,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            stdout: Arc::default(),
        };
        s.spawn().await;
        s
    }

    pub async fn start(db: Db) -> (Server, Option<PgDb>) {
        Self::start_opts(Options::new(db)).await
    }

    pub async fn start_opts(opts: Options) -> (Server, Option<PgDb>) {
        let pg = match opts.db {
            Db::Postgres => Some(pg_fresh().await),
            Db::Sqlite => None,
        };
        let url = pg.as_ref().map(|p| p.url.clone());
        (Server::start_with(opts, url).await, pg)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let found: Arc<Mutex<Option<String>>> = Arc::default();
        let (f, lines) = (found.clone(), self.stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("sovra listening on ") {
                    *f.lock().unwrap() = Some(rest.trim().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(base) = found.lock().unwrap().clone() {
                self.base = base;
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sovra serve exited early: {status}");
            }
            assert!(Instant::now() < deadline, "sovra serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.client.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    /// Runs a CLI subcommand with this server's configuration.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("--config").arg(&self.config);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// SIGKILL: no chance to flush or drain.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for a process that was already signalled to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        c.wait().unwrap()
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// Every audit record, oldest first, through the CLI export.
    pub fn audit_records(&self) -> Vec<Value> {
        let out = self.cli(&["audit", "export", "--format", "jsonl"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn verify_ok(&self) -> Value {
        let out = self.cli(&["audit", "verify"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success(),
            "audit verify failed: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }
}

/// Stops the server, then drops its PostgreSQL database if it had one.
pub async fn finish(s: Server, pg: Option<PgDb>) {
    drop(s);
    if let Some(pg) = pg {
        pg.drop_db().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Standard claims for the test issuer and audience.
pub fn claims(sub: &str, tenant: &str, roles: &[&str], groups: &[&str]) -> Value {
    let now = now();
    json!({"sub": sub, "tenant": tenant, "roles": roles, "groups": groups,
           "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 1, "exp": now + 600})
}

pub fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn signed(alg: Algorithm, key_file: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(fixtures().join("keys").join(key_file)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => panic!("unsupported in tests"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub fn token(roles: &[&str]) -> String {
    hs256(&claims("alice", "bank", roles, &["treasury"]))
}

pub async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

/// The results of `POST /v1/search` (asserting 200).
pub async fn search_hits(s: &Server, token: &str, q: &str, mode: &str) -> Vec<Value> {
    let r = s
        .client
        .post(s.url("/v1/search"))
        .bearer_auth(token)
        .json(&serde_json::json!({"query": q, "mode": mode}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await["results"].as_array().unwrap().clone()
}

/// The passages of search results, highlighting removed.
pub fn snippets(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|h| {
            h["snippet"]
                .as_str()
                .unwrap()
                .replace("<mark>", "")
                .replace("</mark>", "")
        })
        .collect()
}

/// Where the server finds its models (as `Settings::models_dir` without a
/// `models.dir` key).
pub fn models_dir() -> PathBuf {
    match std::env::var("SOVRA_MODELS_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
            .join(".cache/sovra/models"),
    }
}
