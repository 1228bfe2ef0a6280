//! `sovra ingest`: files and folders through a running gateway.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use sovra_auth::DevTokenRequest;
use sovra_config::Settings;

use super::{api_token, api_url};

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
    /// Most files sent in one bulk request (they are embedded and committed
    /// together).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Most bytes of files sent in one bulk request.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub batch_bytes: usize,
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
        .timeout(Duration::from_secs(600))
        .build()?;
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut up = Uploader {
        client,
        url,
        token,
        bar,
        batch: Vec::new(),
        batch_bytes: 0,
        tally: Tally::default(),
        failures: Vec::new(),
    };
    for (path, rel) in &files {
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) => {
                up.failures
                    .push((rel.clone(), format!("could not read it: {e}")));
                up.bar.inc(1);
                continue;
            }
        };
        let mime = sovra_ingest::Format::from_path(path)
            .map(|f| f.content_type())
            .unwrap_or("application/octet-stream");
        let mut doc = serde_json::json!({
            "id": document_id(&args.id_prefix, rel),
            "title": rel,
            "source": rel,
            "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
            "content_type": mime,
            "acl": {"groups": args.acl_groups, "users": args.acl_users},
        });
        if let Some(t) = &args.tenant {
            doc["tenant"] = serde_json::Value::String(t.clone());
        }
        if !up.batch.is_empty() && up.batch_bytes + bytes.len() > args.batch_bytes {
            up.send().await;
        }
        up.batch_bytes += bytes.len();
        up.batch.push((rel.clone(), doc));
        if up.batch.len() >= usize::from(args.batch) {
            up.send().await;
        }
    }
    up.send().await;
    up.bar.finish_and_clear();
    println!(
        "{} files: {} written, {} unchanged, {} failed; {} chunks",
        files.len(),
        up.tally.written,
        up.tally.unchanged,
        up.failures.len(),
        up.tally.chunks
    );
    for (file, why) in &up.failures {
        println!("  failed: {file}: {why}");
    }
    Ok(if up.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Default)]
struct Tally {
    written: usize,
    unchanged: usize,
    chunks: i64,
}

/// Files on their way to the gateway in bulk requests, and what became of
/// those sent.
struct Uploader {
    client: reqwest::Client,
    url: String,
    token: String,
    bar: indicatif::ProgressBar,
    /// (file, document) not sent yet, and their files' bytes.
    batch: Vec<(String, serde_json::Value)>,
    batch_bytes: usize,
    tally: Tally,
    failures: Vec<(String, String)>,
}

impl Uploader {
    /// Sends the batch as one NDJSON bulk write and tallies each file's
    /// outcome; a request that fails as a whole fails each of its files.
    async fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batch_bytes = 0;
        let files: Vec<(String, serde_json::Value)> = std::mem::take(&mut self.batch);
        let (client, url, token, bar) = (&self.client, &self.url, &self.token, &self.bar);
        let (tally, failures) = (&mut self.tally, &mut self.failures);
        bar.set_message(files.first().map(|(f, _)| f.clone()).unwrap_or_default());
        let mut body = Vec::new();
        for (_, doc) in &files {
            body.extend_from_slice(doc.to_string().as_bytes());
            body.push(b'\n');
        }
        let result: anyhow::Result<serde_json::Value> = async {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if status.as_u16() == 207 {
                Ok(body)
            } else {
                let detail = body["detail"].as_str().unwrap_or("no detail");
                anyhow::bail!("HTTP {}: {detail}", status.as_u16())
            }
        }
        .await;
        match result {
            Ok(body) => {
                let results = body["results"].as_array().cloned().unwrap_or_default();
                for (i, (file, _)) in files.iter().enumerate() {
                    let item = results
                        .iter()
                        .find(|r| r["index"].as_u64() == Some(i as u64));
                    match item {
                        Some(r) if r["document"].is_object() => {
                            let d = &r["document"];
                            if d["unchanged"].as_bool() == Some(true) {
                                tally.unchanged += 1;
                            } else {
                                tally.written += 1;
                            }
                            tally.chunks += d["chunks"].as_i64().unwrap_or(0);
                        }
                        Some(r) => {
                            let p = &r["problem"];
                            let detail = p["detail"].as_str().unwrap_or("no detail");
                            let why = match p["field"].as_str() {
                                Some(f) => format!("HTTP {}: {detail} ({f})", r["status"]),
                                None => format!("HTTP {}: {detail}", r["status"]),
                            };
                            failures.push((file.clone(), why));
                        }
                        None => failures.push((file.clone(), "no outcome in the answer".into())),
                    }
                }
            }
            Err(e) => {
                for (file, _) in &files {
                    failures.push((file.clone(), format!("{e:#}")));
                }
            }
        }
        bar.inc(files.len() as u64);
    }
}
