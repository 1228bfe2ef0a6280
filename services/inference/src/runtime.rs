//! Loading ONNX Runtime once per process.

use std::path::Path;
use std::sync::OnceLock;

use crate::InferenceError;

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
}

static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime library at `path` (once; later calls reuse it).
/// A missing file is an error naming the setup command, never a panic.
pub fn init_runtime(path: &Path) -> Result<&'static ort::environment::Environment, InferenceError> {
    if !path.exists() {
        return Err(InferenceError::RuntimeMissing(path.display().to_string()));
    }
    let env = RUNTIME.get_or_init(|| {
        ort::init_from(path.display().to_string())
            .map_err(|e| e.to_string())?
            .with_name("sovra")
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|e| InferenceError::Runtime(e.clone()))
}
