//! Telemetry: `tracing` with OpenTelemetry, and Prometheus metrics.
//!
//! Spans always carry OpenTelemetry trace ids (the id goes into the audit
//! record and the `X-Trace-Id` header); they are exported through OTLP/gRPC
//! only when `telemetry.otlp_endpoint` is set. Logs go to stdout.

mod metrics;

pub use metrics::Metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sovra_config::{LogFormat, TelemetrySettings};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid telemetry.log_level `{0}`")]
    Filter(String),
    #[error("building the OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("installing the tracing subscriber: {0}")]
    Install(String),
}

/// Flushes and stops the exporter when dropped or shut down.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber: stdout logs plus OpenTelemetry spans.
/// Must be called inside a Tokio runtime when an OTLP endpoint is set.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|_| TelemetryError::Filter(settings.log_level.clone()))?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if !settings.otlp_endpoint.is_empty() {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: settings.otlp_endpoint.clone(),
                message: e.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    // The log filter applies to stdout only: request spans (and so trace ids
    // in audit records and headers) exist at INFO whatever the log level.
    let global = filter
        .max_level_hint()
        .map_or(LevelFilter::INFO, |l| l.max(LevelFilter::INFO));
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("sovra"));
    let registry = tracing_subscriber::registry().with(global).with(otel);
    let result = match settings.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}
