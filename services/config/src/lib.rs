//! Sovra's configuration: one typed struct, loaded once at start-up.
//!
//! Sources, later ones winning:
//! 1. the defaults in this file (the embedded, one-laptop set-up);
//! 2. a TOML file (`config/sovra.toml` unless `--config FILE` names another);
//! 3. environment variables `SOVRA__SECTION__KEY` (for example `SOVRA__SERVER__LISTEN`).
//!
//! Unknown keys and values of the wrong type are errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/sovra.toml";
/// The prefix of environment overrides; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "SOVRA__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub audit: AuditSettings,
    pub telemetry: TelemetrySettings,
    pub models: ModelSettings,
    pub ingest: IngestSettings,
    pub search: SearchSettings,
    pub embeddings: EmbeddingSettings,
    pub vectors: VectorSettings,
    pub generator: GeneratorSettings,
    pub answer: AnswerSettings,
    pub replication: ReplicationSettings,
    pub limits: LimitsSettings,
}

/// Where shared limits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In this process (one replica).
    Memory,
    /// In Redis, shared by every replica.
    Redis,
}

/// Quotas per subject and per tenant. A role without an entry (or with 0)
/// is unlimited; a caller with several roles gets the most generous one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    pub backend: LimitsBackend,
    /// `redis://host:6379` (with `backend = "redis"`).
    pub redis_url: String,
    /// Every Redis key starts with this.
    pub key_prefix: String,
    /// Requests per minute per subject, by role.
    pub requests_per_minute: BTreeMap<String, u32>,
    /// Requests per minute per tenant, all subjects together (0: unlimited).
    pub tenant_requests_per_minute: u32,
    /// Generated tokens per UTC day per subject, by role.
    pub tokens_per_day: BTreeMap<String, u64>,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            backend: LimitsBackend::Memory,
            redis_url: String::new(),
            key_prefix: "sovra".into(),
            requests_per_minute: BTreeMap::new(),
            tenant_requests_per_minute: 0,
            tokens_per_day: BTreeMap::new(),
        }
    }
}

/// How a replica follows the catalog's change sequence into its own indexes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationSettings {
    /// Apply other replicas' catalog changes to this replica's indexes.
    pub follow: bool,
    /// Longest wait for a change without a notification, in milliseconds
    /// (PostgreSQL notifies at once; SQLite has only this).
    pub poll_interval_ms: u64,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            follow: true,
            poll_interval_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderSetting {
    Cpu,
    /// ONNX Runtime's CUDA execution provider (the `onnxruntime-gpu` library);
    /// start-up fails when it cannot be used, never falls back silently.
    Cuda,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorSettings {
    /// The model folder's name under `models.dir`, made by `scripts/setup-generator`.
    pub model: String,
    /// An explicit model folder, instead of `models.dir/<model>`.
    pub dir: Option<PathBuf>,
    pub execution_provider: ExecutionProviderSetting,
    pub cuda_device: i32,
    /// ONNX Runtime built with the CUDA execution provider (the
    /// `onnxruntime-gpu` wheel's `libonnxruntime.so.*`, with
    /// `libonnxruntime_providers_cuda.so` beside it), used when
    /// `execution_provider = "cuda"`; empty: what `SOVRA_CUDA=1
    /// scripts/setup-models` puts in `models.dir/onnxruntime-gpu/`.
    pub cuda_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per generation.
    pub intra_threads: usize,
    /// Generations decoded together in one batch (continuous batching);
    /// each holds a KV cache slot of `context_tokens` tokens.
    pub workers: usize,
    /// Requests that may wait for a batch slot; past it, 429 with Retry-After.
    pub queue_capacity: usize,
    /// The share of the waiting places one tenant may hold (0 < share <= 1),
    /// so another tenant's request still finds room.
    pub tenant_queue_share: f64,
    /// Most prompt tokens prefilled in one step; a longer prompt is read in
    /// chunks between the decoding steps of the others.
    pub prefill_chunk_tokens: usize,
    /// A generation's output does not depend on the load: a lone sequence
    /// decodes beside a placeholder row, taking the same arithmetic path as
    /// in a batch (costs a lone sequence some decoding speed).
    pub batch_invariant: bool,
    pub retry_after_secs: u64,
    /// Prompt plus completion, in tokens (at most the model's context).
    pub context_tokens: usize,
    pub default_max_tokens: usize,
    pub max_tokens_limit: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub repetition_penalty: f32,
}

impl Default for GeneratorSettings {
    fn default() -> Self {
        Self {
            model: "qwen2.5-coder-1.5b-instruct".into(),
            dir: None,
            execution_provider: ExecutionProviderSetting::Cpu,
            cuda_device: 0,
            cuda_library: None,
            intra_threads: 2,
            workers: 8,
            queue_capacity: 16,
            tenant_queue_share: 0.5,
            prefill_chunk_tokens: 512,
            batch_invariant: true,
            retry_after_secs: 5,
            context_tokens: 4096,
            default_max_tokens: 256,
            max_tokens_limit: 1024,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerSettings {
    /// Chunks retrieved for a question (the sources the model may cite).
    pub top_k: usize,
    /// A hit becomes a source when it holds this share of the question's
    /// topic words…
    pub min_question_coverage: f32,
    /// …or when its dense cosine similarity reaches this (unset: the
    /// value calibrated for `embeddings.model`, see [`Settings::min_dense_score`])…
    pub min_dense_score: Option<f32>,
    /// …for questions in these languages (ISO 639-1; unset: the languages
    /// `embeddings.model` reads, see [`Settings::dense_gate_languages`]).
    pub dense_gate_languages: Option<Vec<String>>,
    /// Once one hit passes the gate, the other hits holding at least this
    /// share of the question's topic words are sources too (a question
    /// joining two facts finds each in a different passage, and each
    /// passage holds only part of its words).
    pub min_context_coverage: f32,
    /// An answer none of whose sentences a source supports (attribution
    /// finds no citation: the model answered from its own knowledge, not
    /// the documents) is returned as the refusal.
    pub refuse_unsupported: bool,
    /// The model is asked whether the passages a finished answer cites
    /// state it; an answer it does not confirm is returned as the refusal.
    /// Off by default: with the 1.5B its margins do not tell right answers
    /// from wrong ones (docs/answers.md).
    pub verify: bool,
    /// The check confirms when the natural log of the odds of a yes over a
    /// no, as the first token of the model's reply, exceeds this (0: a yes
    /// more likely than a no; higher refuses more).
    pub verify_min_margin: f32,
    /// Tokens a single source may take in the prompt (longer ones are cut).
    pub max_source_tokens: usize,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        Self {
            top_k: 6,
            min_question_coverage: 0.5,
            min_dense_score: None,
            dense_gate_languages: None,
            min_context_coverage: 0.3,
            refuse_unsupported: true,
            verify: false,
            verify_min_margin: 0.0,
            max_source_tokens: 400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSettings {
    /// The embedding model: its folder under the models directory.
    pub model: EmbeddingModelName,
    /// ONNX Runtime intra-op threads for embedding passages (ingestion).
    pub threads: usize,
    /// Intra-op threads of the separate session that embeds search queries.
    pub query_threads: usize,
    /// Texts per model call.
    pub batch_size: usize,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        Self {
            model: EmbeddingModelName::MultilingualE5Small,
            threads: 2,
            query_threads: 2,
            batch_size: 32,
        }
    }
}

/// The dense gate's bar for multilingual-e5-small (see `Settings::min_dense_score`):
/// on the evaluation slices its best cosine for answerable English questions
/// was at least 0.863 (demo) and 0.876 (PubMedQA), for unanswerable ones at
/// most 0.841 and 0.862.
const E5_MIN_DENSE_SCORE: f32 = 0.865;

/// The embedding models the gateway can load (`embeddings.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbeddingModelName {
    /// English only.
    #[serde(rename = "all-minilm-l6-v2")]
    MiniLm,
    /// English, Indonesian, Chinese and about a hundred more.
    #[serde(rename = "multilingual-e5-small")]
    MultilingualE5Small,
}

impl EmbeddingModelName {
    /// Its folder under the models directory.
    pub fn dir(self) -> &'static str {
        match self {
            Self::MiniLm => "all-minilm-l6-v2",
            Self::MultilingualE5Small => "multilingual-e5-small",
        }
    }

    /// The name of this model's vector store (directory or collection)
    /// given the base name: all-MiniLM, the first, keeps the base name;
    /// any other model's name follows it.
    pub fn store_name(self, base: &str) -> String {
        match self {
            Self::MiniLm => base.to_owned(),
            other => format!("{base}-{}", other.dir()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorBackend {
    /// qdrant-edge, in-process, under `<data_dir>/vectors`.
    Edge,
    /// A Qdrant server or cluster at `vectors.url`.
    Qdrant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorSettings {
    pub backend: VectorBackend,
    /// gRPC URL of the Qdrant server (`backend = "qdrant"`), e.g. `http://qdrant:6334`.
    pub url: String,
    pub api_key: String,
    pub collection: String,
    /// Shards of a new collection on a Qdrant cluster (0: the server's default).
    pub shards: u32,
    /// Copies of each shard on a Qdrant cluster (0: the server's default).
    pub replication_factor: u32,
    /// Compare the catalog with both indexes at start-up and repair differences.
    pub reconcile_on_start: bool,
}

impl Default for VectorSettings {
    fn default() -> Self {
        Self {
            backend: VectorBackend::Edge,
            url: String::new(),
            api_key: String::new(),
            collection: "sovra_chunks".into(),
            shards: 0,
            replication_factor: 0,
            reconcile_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Where `scripts/setup-models` put the model files. Empty:
    /// `$SOVRA_MODELS_DIR`, else `~/.cache/sovra/models`.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Largest accepted upload, in bytes (413 past it).
    pub max_document_bytes: usize,
    /// Most documents in one bulk write (a JSON array or NDJSON).
    pub max_bulk_documents: usize,
    /// Largest bulk-write body, in bytes (413 past it).
    pub max_bulk_bytes: usize,
    /// Most bytes a DOCX, or a PDF's compressed streams, may decompress to.
    pub max_unpacked_bytes: u64,
    /// Most characters of text extracted from one document.
    pub max_text_chars: usize,
    /// Parse uploads in a child process with the limits below (`worker`),
    /// or on a thread of the gateway (`in_process`, only for trusted files).
    pub parser: ParserMode,
    /// Address space of a parse worker, in MiB.
    pub parser_max_memory_mb: u64,
    /// CPU seconds of a parse worker.
    pub parser_max_cpu_seconds: u64,
    /// Wall-clock seconds before a parse worker is killed.
    pub parser_timeout_seconds: u64,
    /// Most tokens in one chunk (the embedding model's tokenizer counts).
    pub chunk_max_tokens: usize,
    /// Tokens repeated between consecutive chunks.
    pub chunk_overlap_tokens: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_document_bytes: 20 * 1024 * 1024,
            max_bulk_documents: 1000,
            max_bulk_bytes: 64 * 1024 * 1024,
            max_unpacked_bytes: 64 * 1024 * 1024,
            max_text_chars: 8 * 1024 * 1024,
            parser: ParserMode::Worker,
            parser_max_memory_mb: 1024,
            parser_max_cpu_seconds: 30,
            parser_timeout_seconds: 60,
            chunk_max_tokens: 200,
            chunk_overlap_tokens: 40,
        }
    }
}

/// Where uploads are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParserMode {
    Worker,
    InProcess,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    pub default_top_k: usize,
    pub max_top_k: usize,
    /// Reciprocal Rank Fusion constant: score = sum of weight / (k + rank).
    /// 5, chosen by `sovra eval --search --fusion-grid` on FacQA, RGB and
    /// PubMedQA (docs/retrieval.md): the best worst case over the three.
    pub rrf_k: f32,
    /// Weight of the lexical (BM25) leg in the fusion.
    pub lexical_weight: f32,
    /// Weight of the dense (vector) leg in the fusion.
    pub dense_weight: f32,
    /// Candidates each retriever contributes before fusion.
    pub candidates: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            default_top_k: 10,
            max_top_k: 100,
            rrf_k: 5.0,
            lexical_weight: 1.0,
            dense_weight: 1.0,
            candidates: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port the HTTP server binds.
    pub listen: SocketAddr,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Time allowed for a client to send its request head, in seconds.
    pub client_request_timeout_secs: u64,
    /// Time allowed for a handler to produce its response, in seconds.
    pub handler_timeout_secs: u64,
    /// Time given to in-flight requests at shutdown, in seconds.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            body_limit_bytes: 1024 * 1024,
            client_request_timeout_secs: 10,
            handler_timeout_secs: 60,
            shutdown_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Where embedded state lives: the SQLite database, indexes, keys.
    pub data_dir: PathBuf,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; empty means SQLite at `<data_dir>/sovra.db`.
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for a connection before failing, in seconds.
    pub acquire_timeout_secs: u64,
    /// Apply migrations when `sovra serve` starts (else run `sovra migrate`).
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 10,
            acquire_timeout_secs: 5,
            migrate_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Development mode: allows the HS256 development secret and tokens
    /// without issuer or audience. Never enable in production.
    pub development: bool,
    /// Shared HS256 secret for development tokens (`sovra token`). Empty
    /// in development: this installation's own, made on first use in
    /// `<data_dir>/dev-secret` (mode 0600); nothing ships a secret.
    pub dev_secret: String,
    /// A JWKS document on disk with RS256/ES256 public keys.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (the identity provider's `jwks_uri`).
    pub jwks_url: Option<String>,
    /// Required `iss`; required outside development.
    pub issuer: Option<String>,
    /// Required `aud`; required outside development.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Least time between two JWKS refetches caused by an unknown `kid`, in seconds.
    pub jwks_refetch_interval_secs: u64,
    /// Keys older than this are fetched again before use, in seconds, so a
    /// key the identity provider removed stops verifying within it.
    pub jwks_refresh_interval_secs: u64,
    /// Timeout of one JWKS fetch, in seconds.
    pub jwks_fetch_timeout_secs: u64,
    /// Tokens longer than this are refused before any parsing.
    pub max_token_bytes: usize,
    /// Tokens with more groups than this are refused (fail closed).
    pub max_groups: usize,
    /// Tenant for tokens without a tenant claim; empty: such tokens are refused.
    pub default_tenant: String,
    pub claims: ClaimPaths,
    /// Maps identity-provider role names to Sovra roles (`reader`, `ingester`,
    /// `auditor`, `admin`). Roles not listed keep their own name.
    pub role_map: BTreeMap<String, String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            development: false,
            dev_secret: String::new(),
            jwks_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            jwks_refetch_interval_secs: 60,
            jwks_refresh_interval_secs: 300,
            jwks_fetch_timeout_secs: 5,
            max_token_bytes: 8 * 1024,
            max_groups: 256,
            default_tenant: String::new(),
            claims: ClaimPaths::default(),
            role_map: BTreeMap::new(),
        }
    }
}

/// Dotted paths into the token's claims (`realm_access.roles` for Keycloak).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimPaths {
    pub subject: String,
    pub tenant: String,
    /// Every path listed contributes roles.
    pub roles: Vec<String>,
    /// Every path listed contributes groups.
    pub groups: Vec<String>,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            tenant: "tenant".into(),
            roles: vec!["roles".into()],
            groups: vec!["groups".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Send a response only after its audit record is committed; 503 otherwise.
    pub fail_closed: bool,
    /// Most records committed in one transaction (group commit).
    pub batch_max: usize,
    /// Records queued for commit before callers wait.
    pub queue_capacity: usize,
    /// Keep records this many days (fractions allowed); 0 keeps them
    /// forever and refuses every prune.
    pub retention_days: f64,
    /// How often the server prunes past retention, in seconds.
    pub prune_interval_secs: u64,
    /// What the audit record keeps of a search query or question: `plain`
    /// (the text) or `hash` (SHA-256 of `query_salt` and the text).
    pub query_policy: QueryPolicy,
    /// Salt for `query_policy = "hash"`; keep it secret.
    pub query_salt: String,
    /// Ed25519 key that signs retention checkpoints (`sovra audit keygen`
    /// makes one). Keep it out of the database's and the data directory's
    /// reach: there is no default, and pruning needs it.
    pub checkpoint_key_file: Option<PathBuf>,
    /// Hex Ed25519 public key that verifies checkpoints: all a verifying
    /// host needs. Empty: derived from `checkpoint_key_file` when set.
    pub checkpoint_public_key: String,
    /// Failed authentications per client address and minute that are
    /// recorded one by one; past it: 429, counted into a summary record.
    pub denials_per_minute: u32,
    /// How often the summary records of rate-limited failures are written.
    pub denial_summary_secs: u64,
}

impl AuditSettings {
    /// The retention period in microseconds; `None` keeps records forever.
    pub fn retention_us(&self) -> Option<i64> {
        (self.retention_days > 0.0).then_some((self.retention_days * 86_400_000_000.0) as i64)
    }

    /// The one pruning rule, for the API, the CLI and the retention task:
    /// records may be pruned only before `now_us` minus the retention
    /// period, and never while retention is unlimited. Returns why not.
    pub fn check_prune(&self, before_us: i64, now_us: i64) -> Result<(), PruneRefusal> {
        let Some(retention) = self.retention_us() else {
            return Err(PruneRefusal::RetentionUnlimited);
        };
        let latest = now_us.saturating_sub(retention);
        if before_us > latest {
            return Err(PruneRefusal::WithinRetention {
                retention_days: self.retention_days,
            });
        }
        Ok(())
    }
}

/// Why a prune is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PruneRefusal {
    #[error("audit.retention_days is 0 (keep forever): records cannot be pruned")]
    RetentionUnlimited,
    #[error(
        "records younger than the retention period ({retention_days} days) cannot be pruned: `before` must be at least that long ago"
    )]
    WithinRetention { retention_days: f64 },
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            fail_closed: true,
            batch_max: 512,
            queue_capacity: 8192,
            retention_days: 0.0,
            prune_interval_secs: 3600,
            query_policy: QueryPolicy::Plain,
            query_salt: String::new(),
            checkpoint_key_file: None,
            checkpoint_public_key: String::new(),
            denials_per_minute: 60,
            denial_summary_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryPolicy {
    Plain,
    Hash,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `tracing` filter directives, e.g. `info` or `sovra=debug,info`.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// OTLP gRPC endpoint (e.g. `http://collector:4317`); empty: no export.
    pub otlp_endpoint: String,
    pub service_name: String,
    /// Bearer token that `/metrics` requires (Prometheus `authorization`).
    /// Empty: `/metrics` answers loopback clients only.
    pub metrics_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: String::new(),
            service_name: "sovra".into(),
            metrics_token: String::new(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `path` (or `config/sovra.toml` when it exists),
    /// then `SOVRA__` environment overrides, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match path {
            Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p.to_path_buf())),
            Some(p) => figment = figment.merge(Toml::file(p)),
            None => {
                let default = Path::new(DEFAULT_CONFIG_FILE);
                if default.exists() {
                    figment = figment.merge(Toml::file(default));
                }
            }
        }
        let mut settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(format_figment_error(e)))?;
        settings.validate()?;
        settings.resolve_dev_secret()?;
        Ok(settings)
    }

    /// Development mode without a configured secret: this installation's
    /// own, read from `<data_dir>/dev-secret` or made there (32 random
    /// bytes, hex, mode 0600).
    fn resolve_dev_secret(&mut self) -> Result<(), ConfigError> {
        if !self.auth.development || !self.auth.dev_secret.is_empty() {
            return Ok(());
        }
        let path = self.storage.data_dir.join("dev-secret");
        let invalid = |message: String| ConfigError::Invalid {
            key: "auth.dev_secret",
            message,
        };
        let read = |path: &Path| -> Result<String, ConfigError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
            let secret = text.trim().to_owned();
            if secret.len() < 32 {
                return Err(invalid(format!(
                    "{} holds fewer than 32 bytes",
                    path.display()
                )));
            }
            Ok(secret)
        };
        if path.exists() {
            self.auth.dev_secret = read(&path)?;
            return Ok(());
        }
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Written whole to a file of this process's own, then linked into
        // place, which fails if another process got there first: its
        // secret is then read, so two commands started at once agree.
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), &secret[..16]));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(&self.storage.data_dir)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(secret.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| invalid(format!("writing {}: {e}", tmp.display())))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        self.auth.dev_secret = match linked {
            Ok(()) => secret,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path)?,
            Err(e) => return Err(invalid(format!("writing {}: {e}", path.display()))),
        };
        Ok(())
    }

    /// Checks the rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if !a.development {
            if !a.dev_secret.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.dev_secret",
                    message: "a development secret is only allowed with auth.development = true"
                        .into(),
                });
            }
            if a.issuer.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.issuer",
                    message: "required outside development".into(),
                });
            }
            if a.audience.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.audience",
                    message: "required outside development".into(),
                });
            }
            if a.jwks_file.is_none() && a.jwks_url.is_none() {
                return Err(ConfigError::Invalid {
                    key: "auth.jwks_url",
                    message: "outside development a JWKS file or URL is required".into(),
                });
            }
            if let Some(u) = a.jwks_url.as_deref().filter(|u| !u.is_empty())
                && !secure_or_loopback(u)
            {
                return Err(ConfigError::Invalid {
                    key: "auth.jwks_url",
                    message: "must be an https URL outside development (plain http only to a loopback address)".into(),
                });
            }
        } else {
            if !a.dev_secret.is_empty() && a.dev_secret.len() < 32 {
                return Err(ConfigError::Invalid {
                    key: "auth.dev_secret",
                    message: "must be at least 32 bytes".into(),
                });
            }
            // Development tokens are minted by anyone who can reach
            // /v1/dev/token: never beyond this machine.
            if !self.server.listen.ip().is_loopback() {
                return Err(ConfigError::Invalid {
                    key: "auth.development",
                    message: format!(
                        "development mode listens on loopback only (127.0.0.1 or ::1), not {}; set auth.development = false and configure an identity provider",
                        self.server.listen.ip()
                    ),
                });
            }
        }
        if !a.development && a.jwks_file.is_none() && a.jwks_url.is_none() {
            return Err(ConfigError::Invalid {
                key: "auth",
                message: "no key source: set auth.dev_secret, auth.jwks_file or auth.jwks_url"
                    .into(),
            });
        }
        if a.claims.subject.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.claims.subject",
                message: "must not be empty".into(),
            });
        }
        for (from, to) in &a.role_map {
            if !matches!(to.as_str(), "reader" | "ingester" | "auditor" | "admin") {
                return Err(ConfigError::Invalid {
                    key: "auth.role_map",
                    message: format!(
                        "`{from}` maps to unknown role `{to}` (known: reader, ingester, auditor, admin)"
                    ),
                });
            }
        }
        if self.audit.query_policy == QueryPolicy::Hash && self.audit.query_salt.len() < 16 {
            return Err(ConfigError::Invalid {
                key: "audit.query_salt",
                message: "must be at least 16 bytes when audit.query_policy = \"hash\"".into(),
            });
        }
        if !self.audit.retention_days.is_finite() || self.audit.retention_days < 0.0 {
            return Err(ConfigError::Invalid {
                key: "audit.retention_days",
                message: "must be 0 (keep forever) or a positive number of days".into(),
            });
        }
        if self.audit.retention_days > 0.0 && self.audit.checkpoint_key_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_key_file",
                message: "pruning past audit.retention_days signs a checkpoint: make a key with `sovra audit keygen --output FILE` and set this to it".into(),
            });
        }
        if !self.audit.checkpoint_public_key.is_empty()
            && hex_key(&self.audit.checkpoint_public_key).is_none()
        {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_public_key",
                message: "must be 64 hex digits (an Ed25519 public key)".into(),
            });
        }
        for (key, roles) in [
            (
                "limits.requests_per_minute",
                self.limits.requests_per_minute.keys().collect::<Vec<_>>(),
            ),
            (
                "limits.tokens_per_day",
                self.limits.tokens_per_day.keys().collect::<Vec<_>>(),
            ),
        ] {
            if let Some(bad) = roles
                .iter()
                .find(|r| !matches!(r.as_str(), "reader" | "ingester" | "auditor" | "admin"))
            {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "unknown role `{bad}` (known: reader, ingester, auditor, admin)"
                    ),
                });
            }
        }
        if self.limits.backend == LimitsBackend::Redis && self.limits.redis_url.is_empty() {
            return Err(ConfigError::Invalid {
                key: "limits.redis_url",
                message: "required with limits.backend = \"redis\"".into(),
            });
        }
        if self.audit.denials_per_minute == 0 {
            return Err(ConfigError::Invalid {
                key: "audit.denials_per_minute",
                message: "must be at least 1".into(),
            });
        }
        if !self.telemetry.metrics_token.is_empty() && self.telemetry.metrics_token.len() < 16 {
            return Err(ConfigError::Invalid {
                key: "telemetry.metrics_token",
                message: "must be at least 16 bytes".into(),
            });
        }
        if self.ingest.chunk_max_tokens < 16 || self.ingest.chunk_max_tokens > 256 {
            return Err(ConfigError::Invalid {
                key: "ingest.chunk_max_tokens",
                message: "must be between 16 and 256 (the embedding model reads 256 tokens)".into(),
            });
        }
        for (key, value, least) in [
            (
                "ingest.parser_max_memory_mb",
                self.ingest.parser_max_memory_mb,
                128,
            ),
            (
                "ingest.parser_max_cpu_seconds",
                self.ingest.parser_max_cpu_seconds,
                1,
            ),
            (
                "ingest.parser_timeout_seconds",
                self.ingest.parser_timeout_seconds,
                1,
            ),
        ] {
            if value < least {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("must be at least {least}"),
                });
            }
        }
        if self.ingest.chunk_overlap_tokens >= self.ingest.chunk_max_tokens / 2 {
            return Err(ConfigError::Invalid {
                key: "ingest.chunk_overlap_tokens",
                message: "must be less than half of ingest.chunk_max_tokens".into(),
            });
        }
        if self.search.default_top_k == 0 || self.search.default_top_k > self.search.max_top_k {
            return Err(ConfigError::Invalid {
                key: "search.default_top_k",
                message: "must be between 1 and search.max_top_k".into(),
            });
        }
        if self.vectors.backend == VectorBackend::Qdrant && self.vectors.url.is_empty() {
            return Err(ConfigError::Invalid {
                key: "vectors.url",
                message: "required with vectors.backend = \"qdrant\"".into(),
            });
        }
        if self.search.candidates < self.search.max_top_k {
            return Err(ConfigError::Invalid {
                key: "search.candidates",
                message: "must be at least search.max_top_k".into(),
            });
        }
        if self.search.rrf_k.is_nan() || self.search.rrf_k <= 0.0 {
            return Err(ConfigError::Invalid {
                key: "search.rrf_k",
                message: "must be positive".into(),
            });
        }
        for (key, w) in [
            ("search.lexical_weight", self.search.lexical_weight),
            ("search.dense_weight", self.search.dense_weight),
        ] {
            if !w.is_finite() || w < 0.0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be a number of at least 0".into(),
                });
            }
        }
        if self.search.lexical_weight + self.search.dense_weight <= 0.0 {
            return Err(ConfigError::Invalid {
                key: "search.dense_weight",
                message: "search.lexical_weight and search.dense_weight cannot both be 0".into(),
            });
        }
        if self.audit.batch_max == 0 {
            return Err(ConfigError::Invalid {
                key: "audit.batch_max",
                message: "must be at least 1".into(),
            });
        }
        if self.audit.queue_capacity == 0 {
            return Err(ConfigError::Invalid {
                key: "audit.queue_capacity",
                message: "must be at least 1".into(),
            });
        }
        let g = &self.generator;
        if g.model.is_empty() && g.dir.is_none() {
            return Err(ConfigError::Invalid {
                key: "generator.model",
                message: "must not be empty".into(),
            });
        }
        if g.workers == 0 {
            return Err(ConfigError::Invalid {
                key: "generator.workers",
                message: "must be at least 1".into(),
            });
        }
        if !(g.tenant_queue_share > 0.0 && g.tenant_queue_share <= 1.0) {
            return Err(ConfigError::Invalid {
                key: "generator.tenant_queue_share",
                message: "must be above 0 and at most 1".into(),
            });
        }
        if g.prefill_chunk_tokens == 0 {
            return Err(ConfigError::Invalid {
                key: "generator.prefill_chunk_tokens",
                message: "must be at least 1".into(),
            });
        }
        if g.context_tokens < 256 {
            return Err(ConfigError::Invalid {
                key: "generator.context_tokens",
                message: "must be at least 256".into(),
            });
        }
        if g.max_tokens_limit == 0 || g.max_tokens_limit >= g.context_tokens {
            return Err(ConfigError::Invalid {
                key: "generator.max_tokens_limit",
                message: "must be at least 1 and less than generator.context_tokens".into(),
            });
        }
        if g.default_max_tokens == 0 || g.default_max_tokens > g.max_tokens_limit {
            return Err(ConfigError::Invalid {
                key: "generator.default_max_tokens",
                message: "must be between 1 and generator.max_tokens_limit".into(),
            });
        }
        if !(0.0..=2.0).contains(&g.temperature) {
            return Err(ConfigError::Invalid {
                key: "generator.temperature",
                message: "must be between 0 and 2".into(),
            });
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return Err(ConfigError::Invalid {
                key: "generator.top_p",
                message: "must be in (0, 1]".into(),
            });
        }
        if !(g.repetition_penalty > 0.0 && g.repetition_penalty <= 10.0) {
            return Err(ConfigError::Invalid {
                key: "generator.repetition_penalty",
                message: "must be in (0, 10]".into(),
            });
        }
        if self.answer.top_k == 0 || self.answer.top_k > self.search.max_top_k {
            return Err(ConfigError::Invalid {
                key: "answer.top_k",
                message: "must be between 1 and search.max_top_k".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.answer.min_question_coverage) {
            return Err(ConfigError::Invalid {
                key: "answer.min_question_coverage",
                message: "must be between 0 and 1".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.answer.min_context_coverage) {
            return Err(ConfigError::Invalid {
                key: "answer.min_context_coverage",
                message: "must be between 0 and 1".into(),
            });
        }
        if let Some(l) = self
            .dense_gate_languages()
            .iter()
            .find(|l| !matches!(l.as_str(), "en" | "id" | "zh"))
        {
            return Err(ConfigError::Invalid {
                key: "answer.dense_gate_languages",
                message: format!("`{l}` is not one of en, id, zh"),
            });
        }
        if !self.answer.verify_min_margin.is_finite() {
            return Err(ConfigError::Invalid {
                key: "answer.verify_min_margin",
                message: "must be a finite number".into(),
            });
        }
        if self.answer.max_source_tokens < 32 {
            return Err(ConfigError::Invalid {
                key: "answer.max_source_tokens",
                message: "must be at least 32".into(),
            });
        }
        let url = &self.database.url;
        if !(url.is_empty()
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return Err(ConfigError::Invalid {
                key: "database.url",
                message: "must start with postgres://, postgresql:// or sqlite:".into(),
            });
        }
        Ok(())
    }

    /// The database URL, with the embedded SQLite default resolved.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.storage.data_dir.join("sovra.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// Where the model files are.
    pub fn models_dir(&self) -> PathBuf {
        if let Some(d) = &self.models.dir {
            return d.clone();
        }
        if let Ok(d) = std::env::var("SOVRA_MODELS_DIR") {
            return PathBuf::from(d);
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
        PathBuf::from(home).join(".cache/sovra/models")
    }

    /// The relevance gate's dense bar: `answer.min_dense_score`, or the
    /// value calibrated for the embedding model on the score distributions
    /// of answerable and unanswerable questions (docs/answers.md): cosines
    /// of e5 sit higher than all-MiniLM's for related and unrelated text alike.
    pub fn min_dense_score(&self) -> f32 {
        self.answer
            .min_dense_score
            .unwrap_or(match self.embeddings.model {
                EmbeddingModelName::MiniLm => 0.6,
                EmbeddingModelName::MultilingualE5Small => E5_MIN_DENSE_SCORE,
            })
    }

    /// The languages whose questions the dense gate applies to:
    /// `answer.dense_gate_languages`, or English, for both models. (all-MiniLM
    /// reads no other; e5 reads Indonesian and Chinese, but there its cosines
    /// for questions whose passage is absent overlap those for answerable
    /// ones: FacQA 0.80 to 0.93 against 0.81 to 0.95, RGB 0.90 to 0.94 against
    /// 0.91 to 0.95, so the gate keeps to question coverage there.)
    pub fn dense_gate_languages(&self) -> Vec<String> {
        match &self.answer.dense_gate_languages {
            Some(l) => l.clone(),
            None => vec!["en".into()],
        }
    }

    /// The embedding model's tokenizer (chunking counts its tokens).
    pub fn tokenizer_file(&self) -> PathBuf {
        self.models_dir()
            .join(self.embeddings.model.dir())
            .join("tokenizer.json")
    }

    /// The embedding model (`embeddings.model`).
    pub fn embedding_model_file(&self) -> PathBuf {
        self.models_dir()
            .join(self.embeddings.model.dir())
            .join("model.onnx")
    }

    /// ONNX Runtime's shared library, loaded by `ort` at start-up.
    pub fn onnxruntime_library(&self) -> PathBuf {
        self.models_dir()
            .join("onnxruntime/libonnxruntime.so.1.32.0")
    }

    /// The generative model's folder (`scripts/setup-generator` makes it).
    pub fn generator_dir(&self) -> PathBuf {
        self.generator
            .dir
            .clone()
            .unwrap_or_else(|| self.models_dir().join(&self.generator.model))
    }

    /// ONNX Runtime with the CUDA execution provider (`onnxruntime-gpu`).
    pub fn cuda_onnxruntime_library(&self) -> PathBuf {
        self.generator.cuda_library.clone().unwrap_or_else(|| {
            self.models_dir()
                .join("onnxruntime-gpu/libonnxruntime.so.1.31.1")
        })
    }

    /// Where the embedded vector store lives.
    ///
    /// Vectors belong to the model that made them: each model has its own
    /// store (all-MiniLM-L6-v2, the first, keeps the original name), so a
    /// change of `embeddings.model` starts from an empty store that
    /// reconciliation fills from the catalog, and switching back finds the
    /// old vectors intact.
    pub fn vectors_dir(&self) -> PathBuf {
        self.storage
            .data_dir
            .join(self.embeddings.model.store_name("vectors"))
    }

    /// The Qdrant collection of `embeddings.model`'s vectors
    /// (`vectors.collection`, with the model's name after it unless it is
    /// all-MiniLM-L6-v2).
    pub fn vectors_collection(&self) -> String {
        self.embeddings.model.store_name(&self.vectors.collection)
    }

    /// Where the lexical index lives.
    pub fn index_dir(&self) -> PathBuf {
        self.storage.data_dir.join("index/tantivy")
    }
}

/// Figment's messages name the key; keep them on one line, without values
/// (a value may be a secret).
fn format_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|err| {
            let key = err.path.join(".");
            let kind = err.kind.to_string();
            let source = err
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{kind}{source}")
            } else {
                format!("`{key}`: {kind}{source}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An https URL, or an http one whose host is a loopback address.
fn secure_or_loopback(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

fn hex_key(text: &str) -> Option<()> {
    let t = text.trim();
    (t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        f.write_all(contents.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        f
    }

    const DEV: &str =
        "[auth]\ndevelopment = true\ndev_secret = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn loads_file_and_env_overrides() {
        let f = file(DEV);
        figment::Jail::expect_with(|jail| {
            jail.set_env("SOVRA__SERVER__LISTEN", "127.0.0.1:9999");
            jail.set_env("SOVRA__AUDIT__BATCH_MAX", "7");
            let s = Settings::load(Some(f.path())).map_err(|e| e.to_string())?;
            assert_eq!(s.server.listen.port(), 9999);
            assert_eq!(s.audit.batch_max, 7);
            assert!(s.auth.development);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        let f = file(&format!("{DEV}[server]\nlistn = \"x\"\n"));
        let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("server"), "{err}");
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let f = file(DEV);
        figment::Jail::expect_with(|jail| {
            jail.set_env("SOVRA__SERVER__BOGUS", "1");
            let err = Settings::load(Some(f.path()))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("bogus"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn production_requires_issuer_and_audience() {
        let f = file("[auth]\njwks_file = \"/x.json\"\n");
        let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("auth.issuer"), "{err}");
    }

    #[test]
    fn the_checks_margin_must_be_a_number() {
        for bad in ["nan", "inf", "-inf"] {
            let f = file(&format!("{DEV}[answer]\nverify_min_margin = {bad}\n"));
            let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("answer.verify_min_margin"), "{bad}: {err}");
        }
        let f = file(&format!("{DEV}[answer]\nverify_min_margin = -2.5\n"));
        let s = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"));
        assert_eq!(s.map(|s| s.answer.verify_min_margin).ok(), Some(-2.5));
    }

    #[test]
    fn dev_secret_refused_outside_development() {
        let f = file(
            "[auth]\ndev_secret = \"0123456789abcdef0123456789abcdef\"\nissuer=\"i\"\naudience=\"a\"\njwks_file=\"/x\"\n",
        );
        let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("auth.dev_secret"), "{err}");
    }

    #[test]
    fn development_listens_on_loopback_only() {
        for addr in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
            let f = file(&format!("{DEV}[server]\nlisten = \"{addr}\"\n"));
            let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("auth.development"), "{addr}: {err}");
        }
        let f = file(&format!("{DEV}[server]\nlisten = \"[::1]:8080\"\n"));
        assert!(
            Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__")).is_ok()
        );
    }

    #[test]
    fn development_secret_is_per_installation() {
        use std::os::unix::fs::PermissionsExt;
        let secret_of = |dir: &Path| {
            let f = file(&format!(
                "[auth]\ndevelopment = true\n[storage]\ndata_dir = \"{}\"\n",
                dir.display()
            ));
            Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
                .unwrap_or_else(|e| panic!("{e}"))
                .auth
                .dev_secret
        };
        let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = secret_of(a.path());
        assert_eq!(first.len(), 64);
        assert_eq!(secret_of(a.path()), first, "kept across starts");
        assert_ne!(secret_of(b.path()), first, "each installation its own");
        let mode = std::fs::metadata(a.path().join("dev-secret"))
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Started at once on a new installation, every command agrees.
        let c = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = c.path().to_owned();
        let secrets: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| secret_of(&dir))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("a loader panicked")))
                .collect()
        });
        assert!(secrets.iter().all(|x| *x == secrets[0]), "{secrets:?}");
        assert_eq!(
            std::fs::read_dir(c.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .count(),
            1,
            "no temporary file left behind"
        );
    }

    #[test]
    fn pruning_never_reaches_into_retention() {
        let day = 86_400_000_000i64;
        let now = 100 * day;
        let mut a = AuditSettings::default();
        assert_eq!(a.check_prune(0, now), Err(PruneRefusal::RetentionUnlimited));
        a.retention_days = 30.0;
        assert!(a.check_prune(now - 31 * day, now).is_ok());
        assert!(a.check_prune(now - 30 * day, now).is_ok());
        assert!(matches!(
            a.check_prune(now - 29 * day, now),
            Err(PruneRefusal::WithinRetention { .. })
        ));
        assert!(a.check_prune(now, now).is_err());
    }

    #[test]
    fn jwks_url_is_https_outside_development() {
        for (url, ok) in [
            ("https://idp.example.com/certs", true),
            ("http://127.0.0.1:8081/certs", true),
            ("http://localhost/certs", true),
            ("http://[::1]/certs", true),
            ("http://idp.example.com/certs", false),
            ("http://10.0.0.5/certs", false),
            ("ftp://idp.example.com/certs", false),
            ("not a url", false),
        ] {
            assert_eq!(secure_or_loopback(url), ok, "{url}");
        }
        let f = file(
            "[auth]\njwks_url = \"http://idp.example.com/certs\"\nissuer=\"i\"\naudience=\"a\"\n",
        );
        let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("auth.jwks_url"), "{err}");
    }

    #[test]
    fn retention_needs_a_signing_key() {
        let f = file(&format!("{DEV}[audit]\nretention_days = 7\n"));
        let err = Settings::load_with_env(Some(f.path()), Env::prefixed("SOVRA_TEST_NONE__"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("audit.checkpoint_key_file"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/sovra.toml")));
        assert!(matches!(err, Err(ConfigError::MissingFile(_))));
    }

    #[test]
    fn each_embedding_model_has_its_own_vector_store() {
        let mut s = Settings::default();
        assert_eq!(
            s.vectors_dir(),
            Path::new("./data/vectors-multilingual-e5-small")
        );
        assert_eq!(s.vectors_collection(), "sovra_chunks-multilingual-e5-small");
        s.embeddings.model = EmbeddingModelName::MiniLm;
        assert_eq!(s.vectors_dir(), Path::new("./data/vectors"));
        assert_eq!(s.vectors_collection(), "sovra_chunks");
    }

    #[test]
    fn database_url_defaults_to_sqlite_in_data_dir() {
        let s = Settings::default();
        assert!(s.database_url().starts_with("sqlite://./data/sovra.db"));
    }
}
