//! Where the test models are: `SOVRA_MODELS_DIR`, else the cache that
//! `scripts/setup-models` fills.

use std::path::PathBuf;

pub fn models() -> PathBuf {
    std::env::var("SOVRA_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sovra/models")
        })
}

pub fn runtime() -> PathBuf {
    models().join("onnxruntime/libonnxruntime.so.1.32.0")
}
