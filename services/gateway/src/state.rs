use std::sync::Arc;

use sovra_audit::{AuditSink, CheckpointKey, SqlStore};
use sovra_auth::Authenticator;
use sovra_config::Settings;
use sovra_telemetry::Metrics;

/// What every handler shares; built once at start-up.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Authenticator,
    pub audit: Arc<dyn AuditSink>,
    pub store: SqlStore,
    pub metrics: Metrics,
    pub checkpoint_key: Arc<CheckpointKey>,
}
