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
    let database = crate::cli::database(&settings).await?;
    if settings.database.migrate_on_start {
        database.migrate().await?;
    }
    let store = sovra_audit::SqlStore::new(database.clone());
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
    let checkpoint_key = crate::cli::checkpoint_signing_key(&settings)?.map(Arc::new);
    let checkpoint_verifier =
        crate::cli::checkpoint_verifier(&settings, checkpoint_key.as_deref())?;
    if let (Some(retention), Some(key)) = (settings.audit.retention_us(), &checkpoint_key) {
        spawn_retention(&settings, retention, store.clone(), key.clone());
    }
    if settings.auth.development {
        tracing::warn!(
            "auth.development is on: HS256 development tokens are accepted; never run so in production"
        );
    }
    // Before anything else loads ONNX Runtime: CUDA needs its own library.
    let generation = open_generator(&settings, &metrics)?;
    let (documents, retriever, follow_from) = open_documents(&settings, &database).await?;
    if settings.replication.follow
        && let Some(from) = follow_from
    {
        spawn_follower(&settings, &database, &metrics, documents.clone(), from);
    }
    let limits: Arc<dyn sovra_limits::LimitStore> = match settings.limits.backend {
        sovra_config::LimitsBackend::Memory => Arc::new(sovra_limits::MemoryLimits::new()),
        sovra_config::LimitsBackend::Redis => Arc::new(
            sovra_limits::RedisLimits::connect(
                &settings.limits.redis_url,
                &settings.limits.key_prefix,
            )
            .await
            .context("limits.redis_url")?,
        ),
    };
    let denials = Arc::new(crate::denials::DenialLimiter::new(
        settings.audit.denials_per_minute,
    ));
    let writer = Arc::new(writer);
    let summaries = spawn_denial_summaries(&settings, denials.clone(), writer.clone());
    let settings = Arc::new(settings);
    let state = web::Data::new(AppState {
        settings: settings.clone(),
        auth,
        audit: writer.clone(),
        store,
        database,
        metrics,
        checkpoint_key,
        checkpoint_verifier,
        denials: denials.clone(),
        limits,
        documents,
        answerer: sovra_answer::Answerer::new(
            retriever.clone(),
            generation,
            crate::answers::gate(&settings),
            settings.generator.context_tokens,
            settings.answer.max_source_tokens,
            sovra_answer::Checks {
                refuse_unsupported: settings.answer.refuse_unsupported,
                verify: settings.answer.verify,
                verify_min_margin: settings.answer.verify_min_margin,
            },
        ),
        retriever,
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
    summaries.abort();
    let covered = denials.flush(writer.as_ref()).await;
    if covered > 0 {
        tracing::info!(refused = covered, "denial summaries recorded at shutdown");
    }
    tracing::info!("stopped; in-flight requests drained and audited");
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Writes the summary records of rate-limited authentication failures.
fn spawn_denial_summaries(
    settings: &Settings,
    denials: Arc<crate::denials::DenialLimiter>,
    audit: Arc<GroupCommitWriter>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(settings.audit.denial_summary_secs.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            denials.flush(audit.as_ref()).await;
        }
    })
}

/// The generative model and the queue in front of it. A missing model
/// stops start-up with a message naming `scripts/setup-generator`; CUDA asked
/// for and not usable stops it too (no silent fallback to the CPU).
pub fn open_generator(
    settings: &Settings,
    metrics: &Metrics,
) -> anyhow::Result<Arc<sovra_inference::GenerationQueue>> {
    use sovra_config::ExecutionProviderSetting;
    use sovra_inference::ExecutionProvider;
    let g = &settings.generator;
    let provider = match g.execution_provider {
        ExecutionProviderSetting::Cpu => ExecutionProvider::Cpu,
        ExecutionProviderSetting::Cuda => ExecutionProvider::Cuda,
    };
    let runtime = match provider {
        ExecutionProvider::Cpu => settings.onnxruntime_library(),
        ExecutionProvider::Cuda => settings.cuda_onnxruntime_library(),
    };
    let generator = sovra_inference::OnnxGenerator::load(
        &runtime,
        &settings.generator_dir(),
        &sovra_inference::GeneratorOptions {
            provider,
            cuda_device: g.cuda_device,
            intra_threads: g.intra_threads,
            slots: g.workers,
            context_tokens: g.context_tokens,
            prefill_chunk: g.prefill_chunk_tokens,
            batch_invariant: g.batch_invariant,
        },
    )?;
    let provider_label = match provider {
        ExecutionProvider::Cpu => "cpu",
        ExecutionProvider::Cuda => "cuda",
    };
    metrics
        .generator_info
        .with_label_values(&[
            sovra_inference::Generator::model_id(&generator),
            provider_label,
        ])
        .set(1);
    Ok(Arc::new(sovra_inference::GenerationQueue::new(
        Arc::new(generator),
        g.workers,
        g.queue_capacity,
        g.tenant_queue_share,
    )))
}

fn spawn_retention(
    settings: &Settings,
    retention_us: i64,
    store: sovra_audit::SqlStore,
    key: Arc<CheckpointKey>,
) {
    let every = Duration::from_secs(settings.audit.prune_interval_secs.max(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let before = chrono::Utc::now().timestamp_micros() - retention_us;
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

/// The catalog, both indexes, the embedder and the chunker, for `sovra serve`.
pub async fn open_documents(
    settings: &Settings,
    database: &sovra_storage::Database,
) -> anyhow::Result<(
    Arc<sovra_documents::DocumentService>,
    Arc<sovra_retrieval::Retriever>,
    Option<i64>,
)> {
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
    let embedder: Arc<dyn sovra_inference::Embedder> =
        Arc::new(sovra_inference::OnnxEmbedder::load(
            &settings.onnxruntime_library(),
            match settings.embeddings.model {
                sovra_config::EmbeddingModelName::MiniLm => sovra_inference::EmbeddingModel::MiniLm,
                sovra_config::EmbeddingModelName::MultilingualE5Small => {
                    sovra_inference::EmbeddingModel::MultilingualE5Small
                }
            },
            &settings.embedding_model_file(),
            &tokenizer,
            settings.embeddings.threads,
            settings.embeddings.query_threads,
            settings.embeddings.batch_size,
        )?);
    let dims = embedder.dimensions();
    let vectors: Arc<dyn sovra_vectors::VectorStore> = match settings.vectors.backend {
        sovra_config::VectorBackend::Edge => Arc::new(sovra_vectors::EdgeStore::open(
            &settings.vectors_dir(),
            dims,
        )?),
        sovra_config::VectorBackend::Qdrant => Arc::new(
            sovra_vectors::ServerStore::connect(
                &settings.vectors.url,
                Some(settings.vectors.api_key.clone()).filter(|k| !k.is_empty()),
                &settings.vectors_collection(),
                dims,
                sovra_vectors::ClusterLayout {
                    shards: settings.vectors.shards,
                    replication_factor: settings.vectors.replication_factor,
                },
            )
            .await?,
        ),
    };
    let index = Arc::new(sovra_index::LexicalIndex::open(&settings.index_dir())?);
    let catalog = sovra_catalog::Catalog::new(database);
    let limits = sovra_ingest::Limits {
        max_unpacked_bytes: i.max_unpacked_bytes,
        max_text_chars: i.max_text_chars,
    };
    let retriever = Arc::new(sovra_retrieval::Retriever::new(
        index.clone(),
        vectors.clone(),
        embedder.clone(),
        catalog.clone(),
        sovra_retrieval::Fusion {
            k: settings.search.rrf_k,
            lexical_weight: settings.search.lexical_weight,
            dense_weight: settings.search.dense_weight,
        },
        settings.search.candidates,
    ));
    let documents = Arc::new(
        sovra_documents::DocumentService::new(
            catalog,
            index,
            vectors,
            embedder,
            Arc::new(chunker),
            limits,
        )
        .with_parsing(parsing(i)?),
    );
    // Where following the change sequence starts when this replica never
    // followed: the last change before reconciliation (which brings the
    // indexes up to the catalog), so nothing committed meanwhile is missed.
    let ready = database.ready().await.unwrap_or(false);
    let follow_from = if ready {
        Some(documents.catalog().last_change_seq().await?)
    } else {
        None
    };
    if settings.vectors.reconcile_on_start && !ready {
        tracing::warn!(
            "database migrations are not applied: reconciliation skipped (run `sovra migrate`, then restart)"
        );
    } else if settings.vectors.reconcile_on_start {
        let report = documents.reconcile().await?;
        tracing::info!(
            documents = report.documents,
            repaired = report.repaired.len(),
            removed = report.removed.len(),
            "catalog and indexes reconciled"
        );
        if !report.repaired.is_empty() || !report.removed.is_empty() {
            println!(
                "reconciled: {} documents, repaired {:?}, removed {:?}",
                report.documents, report.repaired, report.removed
            );
        }
    }
    // qdrant-edge builds its HNSW index only when asked: now, then every ten minutes.
    let vectors = documents.vectors().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = vectors.optimize().await {
                tracing::warn!(error = %e, "vector store optimization failed");
            }
        }
    });
    Ok((documents, retriever, follow_from))
}

/// Follows the catalog's change sequence into this replica's indexes, woken
/// by PostgreSQL notifications (polling covers a lost connection, and is all
/// SQLite has).
fn spawn_follower(
    settings: &Settings,
    database: &sovra_storage::Database,
    metrics: &Metrics,
    documents: Arc<sovra_documents::DocumentService>,
    fresh_from: i64,
) {
    let observer: sovra_documents::FollowObserver = {
        let m = metrics.clone();
        Arc::new(move |p: sovra_documents::FollowProgress| {
            m.replication_applied_seq.set(p.applied_seq);
            if p.changes > p.own {
                m.replication_lag_seconds.observe(p.lag_seconds);
            }
        })
    };
    let follower = sovra_documents::Follower::new(
        documents,
        sovra_documents::FollowerOptions {
            state_file: settings.storage.data_dir.join("index/applied-seq"),
            poll: Duration::from_millis(settings.replication.poll_interval_ms.max(10)),
            local_vectors: settings.vectors.backend == sovra_config::VectorBackend::Edge,
            observer: Some(observer),
        },
    );
    let from = follower.saved_seq().unwrap_or(fresh_from);
    if database.backend() == sovra_storage::Backend::Postgres {
        tokio::spawn(sovra_catalog::listen_for_changes(
            settings.database_url(),
            follower.waker(),
        ));
    }
    tokio::spawn(follower.run(from));
}

/// Where uploads are parsed: a child process of this same binary, limited,
/// unless configured otherwise.
fn parsing(i: &sovra_config::IngestSettings) -> anyhow::Result<sovra_ingest::Parsing> {
    Ok(match i.parser {
        sovra_config::ParserMode::InProcess => {
            tracing::warn!(
                "ingest.parser = \"in_process\": a hostile upload can take the gateway down"
            );
            sovra_ingest::Parsing::InProcess
        }
        sovra_config::ParserMode::Worker => sovra_ingest::Parsing::Worker {
            program: std::env::current_exe().map_err(|e| {
                anyhow::anyhow!("cannot find this binary to run parse workers: {e}")
            })?,
            args: vec!["parse-worker".into()],
            limits: sovra_ingest::WorkerLimits {
                max_memory_bytes: i.parser_max_memory_mb.saturating_mul(1024 * 1024),
                max_cpu_seconds: i.parser_max_cpu_seconds,
                timeout: std::time::Duration::from_secs(i.parser_timeout_seconds),
                max_output_bytes: i.max_text_chars.saturating_mul(8),
            },
        },
    })
}
