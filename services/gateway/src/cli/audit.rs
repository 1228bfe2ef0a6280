//! `sovra audit verify | export | prune | keygen`: the audit trail from the
//! command line, with the same rules as the API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sovra_audit::{CheckpointKey, CheckpointVerifier, EventFilter};
use sovra_config::Settings;

use super::connect;
use crate::export::{csv_rows, jsonl_rows};

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
        }
        .context("writing the export")?;
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
