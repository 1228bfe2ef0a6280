//! `sovra ingest`: files and folders through a running gateway.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
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
