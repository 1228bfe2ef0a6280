//! The non-server subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use sovra_audit::{CheckpointKey, CheckpointVerifier, EventFilter, SqlStore};
use sovra_auth::{DevTokenRequest, mint_development_token};
use sovra_config::Settings;

use crate::export::{csv_rows, jsonl_rows};

mod answers;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// Comma-separated roles: reader, ingester, auditor, admin.
    #[arg(long, value_delimiter = ',', default_value = "reader")]
    pub roles: Vec<String>,
    /// Comma-separated groups.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Lifetime: seconds, or a number followed by s, m, h or d.
    #[arg(long, default_value = "8h")]
    pub ttl: String,
}

fn parse_ttl(s: &str) -> anyhow::Result<i64> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("--ttl `{s}`: expected e.g. 3600, 30m, 8h or 7d"))?;
    if n <= 0 {
        bail!("--ttl must be positive");
    }
    Ok(n * mult)
}

pub fn token(settings: &Settings, args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let req = DevTokenRequest {
        subject: args.sub.clone(),
        tenant: args.tenant.clone(),
        roles: args
            .roles
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect(),
        groups: args
            .groups
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect(),
        ttl_secs: parse_ttl(&args.ttl)?,
    };
    let token = mint_development_token(&settings.auth, &req)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub async fn connect(settings: &Settings) -> anyhow::Result<SqlStore> {
    Ok(SqlStore::connect(
        &settings.database_url(),
        settings.database.max_connections,
        Duration::from_secs(settings.database.acquire_timeout_secs),
    )
    .await?)
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = connect(settings).await?;
    store.migrate().await?;
    println!("migrations applied ({:?})", store.backend());
    Ok(ExitCode::SUCCESS)
}

/// The checkpoint signing key, when configured (only pruning needs it).
pub fn checkpoint_signing_key(settings: &Settings) -> anyhow::Result<Option<CheckpointKey>> {
    settings
        .audit
        .checkpoint_key_file
        .as_deref()
        .map(|path| {
            CheckpointKey::load(path).with_context(
                || "audit.checkpoint_key_file (make one with `sovra audit keygen --output FILE`)",
            )
        })
        .transpose()
}

/// What verifies checkpoints: the configured public key, else the public
/// half of the signing key.
pub fn checkpoint_verifier(
    settings: &Settings,
    signing: Option<&CheckpointKey>,
) -> anyhow::Result<Option<CheckpointVerifier>> {
    let public = settings.audit.checkpoint_public_key.trim();
    if !public.is_empty() {
        return Ok(Some(
            CheckpointVerifier::from_hex(public).context("audit.checkpoint_public_key")?,
        ));
    }
    Ok(signing.map(CheckpointKey::verifier))
}

pub async fn audit_verify(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = connect(settings).await?;
    let signing = checkpoint_signing_key(settings)?;
    let verifier = checkpoint_verifier(settings, signing.as_ref())?;
    let report = store.verify(verifier.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.ok {
        eprintln!(
            "audit chain verified: {} records, head seq {}",
            report.checked, report.head_seq
        );
        Ok(ExitCode::SUCCESS)
    } else {
        if let Some(b) = &report.first_broken {
            eprintln!(
                "audit chain BROKEN at seq {} (record {}): {}",
                b.seq, b.id, b.problem
            );
        }
        Ok(ExitCode::from(1))
    }
}

fn time_arg(name: &str, v: Option<String>) -> anyhow::Result<Option<i64>> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| t.timestamp_micros())
            .with_context(|| {
                format!("--{name} `{s}`: expected an RFC 3339 time such as 2026-11-28T09:00:00Z")
            })
    })
    .transpose()
}

pub async fn audit_export(
    settings: &Settings,
    csv: bool,
    since: Option<String>,
    until: Option<String>,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let filter = EventFilter {
        since_us: time_arg("since", since)?,
        until_us: time_arg("until", until)?,
        ..Default::default()
    };
    let store = connect(settings).await?;
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut after = 0;
    let mut first = true;
    let mut count = 0usize;
    loop {
        let page = store.export_page(&filter, after, 1000).await?;
        let bytes = if csv {
            csv_rows(&page, first)
        } else {
            jsonl_rows(&page)
        };
        out.write_all(&bytes)?;
        first = false;
        count += page.len();
        match page.last() {
            Some(last) if page.len() == 1000 => after = last.seq,
            _ => break,
        }
    }
    out.flush()?;
    eprintln!("exported {count} records");
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_prune(settings: &Settings, before: Option<String>) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now().timestamp_micros();
    let before_us = match time_arg("before", before)? {
        Some(t) => t,
        None => match settings.audit.retention_us() {
            Some(r) => now - r,
            None => bail!("audit.retention_days is 0 (keep forever): records cannot be pruned"),
        },
    };
    settings.audit.check_prune(before_us, now)?;
    let Some(key) = checkpoint_signing_key(settings)? else {
        bail!("pruning signs a checkpoint: set audit.checkpoint_key_file");
    };
    let store = connect(settings).await?;
    let report = store.prune_before(before_us, &key).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Makes a checkpoint signing key (mode 0600) and prints its public key,
/// for `audit.checkpoint_public_key` on the hosts that only verify.
pub fn audit_keygen(output: &std::path::Path) -> anyhow::Result<ExitCode> {
    if output.exists() {
        bail!("{} exists; not overwriting a signing key", output.display());
    }
    let key = CheckpointKey::load_or_create(output)?;
    println!("{}", key.public_hex());
    eprintln!(
        "signing key written to {} (mode 0600); set audit.checkpoint_key_file to it where pruning runs, and audit.checkpoint_public_key to the line above where verification runs",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").ok(), Some(90));
        assert_eq!(parse_ttl("2m").ok(), Some(120));
        assert_eq!(parse_ttl("8h").ok(), Some(28800));
        assert_eq!(parse_ttl("1d").ok(), Some(86400));
        assert!(parse_ttl("x").is_err());
        assert!(parse_ttl("-1").is_err());
    }
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Files and folders (walked recursively; hidden entries skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tenant of the documents (default: the token's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Comma-separated groups who may read the documents.
    #[arg(long, value_delimiter = ',')]
    pub acl_groups: Vec<String>,
    /// Comma-separated users who may read the documents.
    #[arg(long, value_delimiter = ',')]
    pub acl_users: Vec<String>,
    /// Gateway URL (default: http://<server.listen>).
    #[arg(long)]
    pub server: Option<String>,
    /// Bearer token with the ingester role (default: a development token
    /// minted from the configured development secret).
    #[arg(long, env = "SOVRA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Prefix for document ids, which are otherwise the file's path below
    /// the folder given (so re-ingesting a file replaces it).
    #[arg(long, default_value = "")]
    pub id_prefix: String,
}

/// The token a CLI command calls the API with: `--token` (or `SOVRA_TOKEN`),
/// else a development token when a development secret is configured.
pub(crate) fn api_token(
    settings: &Settings,
    given: &Option<String>,
    dev: DevTokenRequest,
) -> anyhow::Result<String> {
    match given {
        Some(t) => Ok(t.clone()),
        None => mint_development_token(&settings.auth, &dev)
            .context("no --token (or SOVRA_TOKEN) given"),
    }
}

/// `--server` (default `http://<server.listen>`) joined with `path`.
pub(crate) fn api_url(settings: &Settings, server: &Option<String>, path: &str) -> String {
    let base = server
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.server.listen));
    format!("{}{path}", base.trim_end_matches('/'))
}

fn walk(root: &std::path::Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    fn visit(
        base: &std::path::Path,
        dir: &std::path::Path,
        out: &mut Vec<(PathBuf, String)>,
    ) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            if e.file_type()?.is_dir() {
                visit(base, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((path, rel));
            }
        }
        Ok(())
    }
    if root.is_dir() {
        visit(root, root, out)
    } else {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((root.to_path_buf(), name));
        Ok(())
    }
}

fn document_id(prefix: &str, rel: &str) -> String {
    let id: String = format!("{prefix}{rel}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    id.chars().take(128).collect()
}

pub async fn ingest(settings: &Settings, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let token = api_token(
        settings,
        &args.token,
        DevTokenRequest {
            subject: "sovra-cli".into(),
            tenant: args.tenant.clone().unwrap_or_else(|| "default".into()),
            roles: vec!["ingester".into()],
            groups: Vec::new(),
            ttl_secs: 3600,
        },
    )?;
    let url = api_url(settings, &args.server, "/v1/documents");
    let mut files = Vec::new();
    for p in &args.paths {
        walk(p, &mut files).with_context(|| format!("reading {}", p.display()))?;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut failures: Vec<(String, String)> = Vec::new();
    let (mut written, mut unchanged, mut chunks) = (0usize, 0usize, 0i64);
    for (path, rel) in &files {
        bar.set_message(rel.clone());
        let result: anyhow::Result<serde_json::Value> = async {
            let bytes = tokio::fs::read(path).await?;
            let mime = sovra_ingest::Format::from_path(path)
                .map(|f| f.content_type())
                .unwrap_or("application/octet-stream");
            let file = reqwest::multipart::Part::bytes(bytes)
                .file_name(rel.clone())
                .mime_str(mime)?;
            let mut form = reqwest::multipart::Form::new()
                .part("file", file)
                .text("id", document_id(&args.id_prefix, rel))
                .text("acl_groups", args.acl_groups.join(","))
                .text("acl_users", args.acl_users.join(","));
            if let Some(t) = &args.tenant {
                form = form.text("tenant", t.clone());
            }
            let resp = client
                .post(&url)
                .bearer_auth(&token)
                .multipart(form)
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if status.is_success() {
                Ok(body)
            } else {
                let detail = body["detail"].as_str().unwrap_or("no detail");
                anyhow::bail!("HTTP {}: {detail}", status.as_u16())
            }
        }
        .await;
        match result {
            Ok(body) => {
                if body["unchanged"].as_bool() == Some(true) {
                    unchanged += 1;
                } else {
                    written += 1;
                }
                chunks += body["chunks"].as_i64().unwrap_or(0);
            }
            Err(e) => failures.push((rel.clone(), format!("{e:#}"))),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "{} files: {written} written, {unchanged} unchanged, {} failed; {chunks} chunks",
        files.len(),
        failures.len()
    );
    for (file, why) in &failures {
        println!("  failed: {file}: {why}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("set").required(true).args(["queries", "answers"])))]
pub struct EvalArgs {
    /// Retrieval: JSONL, one {"query": "...", "relevant": ["document id", ...], "kind": "..."} per line.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Answers: a question set (facqa*.csv, rgb*.json, pubmedqa*.json, or
    /// Sovra's own *.jsonl); its passages are ingested into the tenant
    /// `eval-<set>` and every question is asked through POST /v1/query.
    #[arg(long)]
    pub answers: Option<PathBuf>,
    #[command(flatten)]
    pub answer: answers::AnswerEvalArgs,
    /// Gateway URL (default: http://<server.listen>).
    #[arg(long)]
    pub server: Option<String>,
    /// Bearer token with the reader role (default: a development token for
    /// --tenant and --groups).
    #[arg(long, env = "SOVRA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "staff,treasury,compliance,management,nursing,pharmacy"
    )]
    pub groups: Vec<String>,
    /// Cut-off for nDCG and recall.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
}

#[derive(serde::Deserialize)]
struct Judged {
    query: String,
    relevant: Vec<String>,
    #[serde(default)]
    kind: String,
}

/// The document ids `POST /v1/search` ranks for `query` in `mode`, in rank
/// order (a document once per chunk).
pub(crate) async fn search_documents(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    mode: &str,
    top_k: usize,
) -> anyhow::Result<Vec<String>> {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"query": query, "mode": mode, "top_k": top_k}))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("a /v1/search answer")?;
    if !status.is_success() {
        bail!(
            "search `{query}` ({mode}) failed: HTTP {}: {}",
            status.as_u16(),
            body["detail"]
        );
    }
    Ok(body["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["document_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// nDCG@k, recall@k and reciprocal rank of one ranked list of document ids
/// (binary relevance; each document counted once, at its best rank).
pub fn score(ranked: &[String], relevant: &[String], k: usize) -> (f64, f64, f64) {
    let mut seen = std::collections::HashSet::new();
    let docs: Vec<&String> = ranked.iter().filter(|d| seen.insert(*d)).collect();
    let rel = |d: &String| relevant.contains(d);
    let dcg: f64 = docs
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| rel(d))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let found = docs.iter().take(k).filter(|d| rel(d)).count();
    let rr = docs
        .iter()
        .position(|d| rel(d))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0));
    let ndcg = if ideal > 0.0 { dcg / ideal } else { 0.0 };
    let recall = if relevant.is_empty() {
        0.0
    } else {
        found as f64 / relevant.len() as f64
    };
    (ndcg, recall, rr)
}

pub async fn eval(settings: &Settings, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let queries = match (&args.queries, &args.answers) {
        (_, Some(set)) => return answers::eval(settings, &args, set).await,
        (Some(q), None) => q.clone(),
        (None, None) => bail!("give --queries or --answers"),
    };
    let text = std::fs::read_to_string(&queries)
        .with_context(|| format!("reading {}", queries.display()))?;
    let judged: Vec<Judged> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a judged query", queries.display(), i + 1))
        })
        .collect::<Result<_, _>>()?;
    let token = api_token(
        settings,
        &args.token,
        DevTokenRequest {
            subject: "sovra-eval".into(),
            tenant: args.tenant.clone(),
            roles: vec!["reader".into()],
            groups: args.groups.clone(),
            ttl_secs: 3600,
        },
    )?;
    let url = api_url(settings, &args.server, "/v1/search");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let modes = ["lexical", "dense", "hybrid"];
    // (mode, kind) -> (sum ndcg, sum recall, sum rr, n)
    let mut totals: std::collections::BTreeMap<(usize, String), (f64, f64, f64, usize)> =
        Default::default();
    for q in &judged {
        for (m, mode) in modes.iter().enumerate() {
            let ranked =
                search_documents(&client, &url, &token, &q.query, mode, (args.k * 3).min(100))
                    .await?;
            let (n, r, rr) = score(&ranked, &q.relevant, args.k);
            for kind in ["all".to_owned(), q.kind.clone()] {
                let t = totals.entry((m, kind)).or_default();
                t.0 += n;
                t.1 += r;
                t.2 += rr;
                t.3 += 1;
            }
        }
    }
    let k = args.k;
    println!(
        "{} queries from {}; k = {k}",
        judged.len(),
        queries.display()
    );
    println!(
        "{:<16} {:<8} {:>9} {:>10} {:>7}",
        "queries",
        "mode",
        format!("nDCG@{k}"),
        format!("recall@{k}"),
        "MRR"
    );
    let kinds: std::collections::BTreeSet<String> =
        totals.keys().map(|(_, kind)| kind.clone()).collect();
    let ordered = std::iter::once("all".to_owned()).chain(kinds.into_iter().filter(|x| x != "all"));
    for kind in ordered {
        for (m, mode) in modes.iter().enumerate() {
            if let Some((n, r, rr, c)) = totals.get(&(m, kind.clone())) {
                let c = *c as f64;
                println!(
                    "{:<16} {:<8} {:>9.3} {:>10.3} {:>7.3}",
                    format!("{kind} ({c})"),
                    mode,
                    n / c,
                    r / c,
                    rr / c
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod eval_tests {
    use super::score;

    #[test]
    fn metrics() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (n, r, rr) = score(&s(&["a", "b", "c"]), &s(&["a"]), 10);
        assert_eq!((n, r, rr), (1.0, 1.0, 1.0));
        let (n, r, rr) = score(&s(&["x", "x", "a"]), &s(&["a", "b"]), 10);
        assert!((rr - 0.5).abs() < 1e-9, "documents counted once");
        assert!((r - 0.5).abs() < 1e-9);
        assert!((n - (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-9);
        assert_eq!(score(&s(&["x"]), &s(&["a"]), 10), (0.0, 0.0, 0.0));
    }
}
