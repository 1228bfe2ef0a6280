//! `sovra serve`: wires the crates together and runs actix-web.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use sovra_audit::{CheckpointKey, GroupCommitWriter};
use sovra_auth::Authenticator;
use sovra_config::Settings;
use sovra_telemetry::Metrics;

use crate::middleware::pipeline;
use crate::routes;
use crate::state::AppState;

pub async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let telemetry = sovra_telemetry::init(&settings.telemetry)?;
    let store = crate::cli::connect(&settings).await?;
    if settings.database.migrate_on_start {
        store.migrate().await?;
    }
    let metrics = Metrics::new().map_err(anyhow::Error::msg)?;
    let observer = {
        let m = metrics.clone();
        Arc::new(move |n: usize, secs: f64, ok: bool| m.observe_commit(n, secs, ok))
    };
    let writer = GroupCommitWriter::start(
        store.clone(),
        settings.audit.batch_max,
        settings.audit.queue_capacity,
        Some(observer),
    );
    let auth = Authenticator::new(&settings.auth).await?;
    let key_path = settings.checkpoint_key_file();
    let checkpoint_key = Arc::new(
        CheckpointKey::load_or_create(&key_path)
            .with_context(|| format!("audit checkpoint key {}", key_path.display()))?,
    );
    if settings.audit.retention_days > 0 {
        spawn_retention(&settings, store.clone(), checkpoint_key.clone());
    }
    if settings.auth.development {
        tracing::warn!(
            "auth.development is on: HS256 development tokens are accepted; never run so in production"
        );
    }
    let documents = Arc::new(open_documents(&settings, &store)?);
    let settings = Arc::new(settings);
    let state = web::Data::new(AppState {
        settings: settings.clone(),
        auth,
        audit: Arc::new(writer),
        store,
        metrics,
        checkpoint_key,
        documents,
    });
    let body_limit = settings.server.body_limit_bytes;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(body_limit))
            .wrap(from_fn(pipeline))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .client_request_timeout(Duration::from_secs(
        settings.server.client_request_timeout_secs,
    ))
    .shutdown_timeout(settings.server.shutdown_timeout_secs);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let server = server
        .bind(settings.server.listen)
        .with_context(|| format!("binding {}", settings.server.listen))?;
    for addr in server.addrs() {
        // Tests and scripts read this line to find the port.
        println!("sovra listening on http://{addr}");
        tracing::info!(%addr, "listening");
    }
    server.run().await.context("HTTP server")?;
    tracing::info!("stopped; in-flight requests drained and audited");
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn spawn_retention(settings: &Settings, store: sovra_audit::SqlStore, key: Arc<CheckpointKey>) {
    let days = i64::from(settings.audit.retention_days);
    let every = Duration::from_secs(settings.audit.prune_interval_secs.max(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let before = chrono::Utc::now().timestamp_micros() - days * 86_400_000_000;
            match store.prune_before(before, &key).await {
                Ok(r) if r.pruned > 0 => {
                    tracing::info!(pruned = r.pruned, checkpoint = ?r.checkpoint_seq, "audit retention pruned")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "audit retention prune failed"),
            }
        }
    });
}

/// The catalog, the lexical index and the chunker, for `sovra serve`.
pub fn open_documents(
    settings: &Settings,
    store: &sovra_audit::SqlStore,
) -> anyhow::Result<sovra_ingest::DocumentService> {
    let tokenizer = settings.tokenizer_file();
    if !tokenizer.exists() {
        anyhow::bail!(
            "the embedding model's tokenizer is missing at {}: run scripts/setup-models (or set models.dir)",
            tokenizer.display()
        );
    }
    let i = &settings.ingest;
    let chunker = sovra_ingest::Chunker::from_file(
        &tokenizer,
        sovra_ingest::ChunkerConfig {
            max_tokens: i.chunk_max_tokens,
            overlap_tokens: i.chunk_overlap_tokens,
        },
    )?;
    let index = sovra_index::LexicalIndex::open(&settings.index_dir())?;
    let catalog = sovra_catalog::Catalog::new(
        store.pool().clone(),
        store.backend() == sovra_audit::Backend::Postgres,
    );
    let limits = sovra_ingest::Limits {
        max_unpacked_bytes: i.max_unpacked_bytes,
        max_text_chars: i.max_text_chars,
    };
    Ok(sovra_ingest::DocumentService::new(
        catalog,
        Arc::new(index),
        Arc::new(chunker),
        limits,
    ))
}
