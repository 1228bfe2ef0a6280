//! Models run in-process by ONNX Runtime (`ort`, loaded dynamically from the
//! library `scripts/setup-models` fetched): the [`Embedder`] trait and
//! [`OnnxEmbedder`], all-MiniLM-L6-v2 with mean pooling and L2 normalisation;
//! the [`Generator`] trait and [`OnnxGenerator`], a decoder from ONNX
//! Runtime's model builder run with continuous batching; and the fair
//! [`GenerationQueue`] in front of it.

mod embed;
pub mod generate;
mod queue;
mod runtime;

pub use embed::{Embedder, Embedding, EmbeddingModel, OnnxEmbedder, TextKind};
pub use generate::{
    ChatMessage, FinishReason, Generation, Generator, GeneratorOptions, OnnxGenerator,
    SamplingParams,
};
pub use queue::{GenerationEvent, GenerationHandle, GenerationQueue, QueueFull};
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
    #[error(
        "generative model file not found at {0}: run scripts/setup-generator (or set generator.dir)"
    )]
    GeneratorMissing(String),
    #[error("model: {0}")]
    Model(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("the CUDA execution provider was configured but cannot be used: {0}")]
    CudaUnavailable(String),
    #[error("invalid input: {0}")]
    Input(String),
}

/// An ONNX Runtime failure (or another one without a kind of its own).
pub(crate) fn rt<E: std::fmt::Display>(e: E) -> InferenceError {
    InferenceError::Runtime(e.to_string())
}
