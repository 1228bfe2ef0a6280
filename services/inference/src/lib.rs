//! Models run in-process by ONNX Runtime (`ort`, loaded dynamically from the
//! library `scripts/setup-models` fetched): the [`Embedder`] trait and
//! [`OnnxEmbedder`], all-MiniLM-L6-v2 with mean pooling and L2 normalisation.

mod embed;
mod runtime;

pub use embed::{Embedder, Embedding, OnnxEmbedder};
pub use runtime::{ExecutionProvider, init_runtime};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("ONNX Runtime library not found at {0}: run scripts/setup-models (or set models.dir)")]
    RuntimeMissing(String),
    #[error("model file not found at {0}: run scripts/setup-models (or set models.dir)")]
    ModelMissing(String),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid input: {0}")]
    Input(String),
}
