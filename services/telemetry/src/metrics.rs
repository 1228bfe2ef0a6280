//! Prometheus metrics. Labels are bounded: route patterns, methods, status
//! codes and reason codes; never a subject, document id or query.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub audit_commit_seconds: Histogram,
    pub audit_batch_records: Histogram,
    pub audit_failures: IntCounter,
    pub auth_denials: IntCounterVec,
    /// 1, labelled with the served model and the execution provider in use.
    pub generator_info: IntGaugeVec,
    /// Prompt and completion tokens, by `kind`.
    pub generation_tokens: IntCounterVec,
    pub generation_first_token_seconds: Histogram,
    /// Time a generation waited in the queue for a batch slot.
    pub generation_queue_seconds: Histogram,
    /// Sequences decoded together, averaged over a generation's steps.
    pub generation_batch_size: Histogram,
    /// A generation's own decoding speed (after its first token).
    pub generation_decode_tokens_per_second: Histogram,
    /// Generations by finish reason (`stop`, `length`, `cancelled`, `error`, `queue_full`).
    pub generations: IntCounterVec,
    /// The last catalog change this replica applied to its indexes.
    pub replication_applied_seq: IntGauge,
    /// From a change's commit to its application on this replica.
    pub replication_lag_seconds: Histogram,
    /// Requests refused by a quota, by reason.
    pub quota_denials: IntCounterVec,
}

fn must<T>(r: Result<T, prometheus::Error>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

impl Metrics {
    pub fn new() -> Result<Self, String> {
        let registry =
            Registry::new_custom(Some("sovra".into()), None).map_err(|e| e.to_string())?;
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        ))?;
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ],
            ),
            &["route", "method", "status"],
        ))?;
        let audit_commit_seconds = must(Histogram::with_opts(
            HistogramOpts::new("audit_commit_seconds", "Time to commit one audit batch").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            ),
        ))?;
        let audit_batch_records = must(Histogram::with_opts(
            HistogramOpts::new("audit_batch_records", "Audit records per group commit").buckets(
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
        ))?;
        let audit_failures = must(IntCounter::new(
            "audit_failures_total",
            "Audit records that could not be committed",
        ))?;
        let auth_denials = must(IntCounterVec::new(
            Opts::new(
                "auth_denials_total",
                "Requests denied by authentication or authorization",
            ),
            &["reason"],
        ))?;
        let generator_info = must(IntGaugeVec::new(
            Opts::new(
                "generator_info",
                "The generative model served and its ONNX Runtime execution provider",
            ),
            &["model", "provider"],
        ))?;
        let generation_tokens = must(IntCounterVec::new(
            Opts::new(
                "generation_tokens_total",
                "Tokens processed by the generator",
            ),
            &["kind"],
        ))?;
        let generation_first_token_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "generation_first_token_seconds",
                "Time from admission to the first generated token (queue wait excluded)",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        ))?;
        let generation_queue_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "generation_queue_seconds",
                "Time a generation waited in the queue for a batch slot",
            )
            .buckets(vec![
                0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        ))?;
        let generation_batch_size = must(Histogram::with_opts(
            HistogramOpts::new(
                "generation_batch_size",
                "Sequences decoded together, averaged over a generation's decoding steps",
            )
            .buckets(vec![1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]),
        ))?;
        let generation_decode_tokens_per_second = must(Histogram::with_opts(
            HistogramOpts::new(
                "generation_decode_tokens_per_second",
                "One generation's decoding speed after its first token",
            )
            .buckets(vec![
                1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 250.0, 500.0,
            ]),
        ))?;
        let generations = must(IntCounterVec::new(
            Opts::new("generations_total", "Generations by outcome"),
            &["outcome"],
        ))?;
        let replication_applied_seq = must(IntGauge::new(
            "replication_applied_seq",
            "The last catalog change-sequence number applied to this replica's indexes",
        ))?;
        let replication_lag_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "replication_lag_seconds",
                "From a catalog change's commit to its application on this replica",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ]),
        ))?;
        let quota_denials = must(IntCounterVec::new(
            Opts::new(
                "quota_denials_total",
                "Requests refused by a quota, by reason",
            ),
            &["reason"],
        ))?;
        for c in [
            Box::new(quota_denials.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(replication_applied_seq.clone()),
            Box::new(replication_lag_seconds.clone()),
            Box::new(generator_info.clone()),
            Box::new(generation_tokens.clone()),
            Box::new(generation_first_token_seconds.clone()),
            Box::new(generation_queue_seconds.clone()),
            Box::new(generation_batch_size.clone()),
            Box::new(generation_decode_tokens_per_second.clone()),
            Box::new(generations.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(audit_commit_seconds.clone()),
            Box::new(audit_batch_records.clone()),
            Box::new(audit_failures.clone()),
            Box::new(auth_denials.clone()),
        ] {
            must(registry.register(c))?;
        }
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            audit_commit_seconds,
            audit_batch_records,
            audit_failures,
            auth_denials,
            generator_info,
            generation_tokens,
            generation_first_token_seconds,
            generation_queue_seconds,
            generation_batch_size,
            generation_decode_tokens_per_second,
            generations,
            replication_applied_seq,
            replication_lag_seconds,
            quota_denials,
        })
    }

    /// Records one group commit.
    pub fn observe_commit(&self, records: usize, seconds: f64, ok: bool) {
        self.audit_commit_seconds.observe(seconds);
        self.audit_batch_records.observe(records as f64);
        if !ok {
            self.audit_failures.inc_by(records as u64);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
