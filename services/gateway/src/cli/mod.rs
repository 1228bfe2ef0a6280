//! The non-server subcommands, one module each; what they share (the
//! database connection, the API address and token) is here.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sovra_audit::SqlStore;
use sovra_auth::{DevTokenRequest, mint_development_token};
use sovra_config::Settings;
use sovra_storage::Database;

mod answers;
mod audit;
mod eval;
mod ingest;
mod token;

pub use audit::{
    audit_export, audit_keygen, audit_prune, audit_verify, checkpoint_signing_key,
    checkpoint_verifier,
};
pub use eval::{EvalArgs, eval};
pub(crate) use eval::{search_chunks, search_documents};
pub use ingest::{IngestArgs, ingest};
pub use token::{TokenArgs, token};

/// The catalog-and-audit database of `settings`.
pub async fn database(settings: &Settings) -> anyhow::Result<Database> {
    Ok(Database::connect(
        &settings.database_url(),
        settings.database.max_connections,
        Duration::from_secs(settings.database.acquire_timeout_secs),
    )
    .await?)
}

/// The audit trail in the database of `settings`.
pub async fn connect(settings: &Settings) -> anyhow::Result<SqlStore> {
    Ok(SqlStore::new(database(settings).await?))
}

pub async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = database(settings).await?;
    db.migrate().await?;
    println!("migrations applied ({:?})", db.backend());
    Ok(ExitCode::SUCCESS)
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
