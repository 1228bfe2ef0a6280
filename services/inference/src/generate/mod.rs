//! Text generation: the [`Generator`] trait, its ONNX Runtime implementation
//! ([`OnnxGenerator`]; the sequences of all callers decoded together by one
//! batching engine over a KV cache allocated once, `batch.rs`), sampling,
//! the model's own chat template, and stop handling.

mod batch;
mod onnx;
mod sampling;
mod template;
mod text;

use serde::Serialize;

pub use onnx::{DecoderConfig, GeneratorOptions, OnnxGenerator};
pub use sampling::Sampler;
pub use template::ChatTemplate;
pub use text::TextStream;

use crate::{ExecutionProvider, InferenceError};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// How the next token is chosen, and when generation stops.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0: greedy (always the most likely token).
    pub temperature: f32,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches
    /// `top_p` (1: off).
    pub top_p: f32,
    /// Only the `top_k` most likely tokens (0: off).
    pub top_k: usize,
    /// Same seed, same prompt, same output. `None`: a fresh random seed.
    pub seed: Option<u64>,
    /// > 1 makes tokens already generated less likely (1: off).
    pub repetition_penalty: f32,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Added to a token's logit before sampling (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// Tokens whose log-probabilities at the first generated position (the
    /// model's own, before bias and penalty) the [`Generation`] reports in
    /// [`Generation::first_logprobs`], in this order.
    pub logprobs_of: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            repetition_penalty: 1.0,
            stop: Vec::new(),
            logit_bias: Vec::new(),
            logprobs_of: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn token or a stop sequence.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
    /// The caller went away.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    /// From the call to the first generated token (prefill included).
    pub first_token_ms: f64,
    pub total_ms: f64,
    /// Waiting in the queue before decoding started (set by the queue).
    pub queue_ms: f64,
    /// Sequences decoded together, averaged over this one's tokens (its
    /// first, made by its own prefill, counts as one).
    pub mean_batch: f64,
    /// The log-probabilities of [`SamplingParams::logprobs_of`] at the first
    /// generated position (empty when none were asked for).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_logprobs: Vec<f32>,
}

/// Produces text from a prompt. Blocking: call from a blocking thread.
pub trait Generator: Send + Sync {
    fn model_id(&self) -> &str;
    /// The most tokens prompt and completion may take together.
    fn context_tokens(&self) -> usize;
    fn vocab_size(&self) -> usize;
    fn execution_provider(&self) -> ExecutionProvider;
    /// The conversation in the model's own chat template, ready for the
    /// assistant's turn.
    fn render(&self, messages: &[ChatMessage]) -> Result<String, InferenceError>;
    /// Tokens `text` takes in a prompt.
    fn count_tokens(&self, text: &str) -> Result<usize, InferenceError>;
    /// `text` cut to at most `max_tokens` tokens, at a token boundary.
    fn truncate(&self, text: &str, max_tokens: usize) -> Result<String, InferenceError>;
    /// Ids of the vocabulary's tokens whose text holds `c` (for banning a
    /// character with `logit_bias`), in ascending order.
    fn tokens_containing(&self, c: char) -> Vec<u32>;
    /// The token ids of `text` (no special tokens added).
    fn token_ids(&self, text: &str) -> Result<Vec<u32>, InferenceError>;
    /// Generates a completion of `prompt`. `on_text` receives each new piece
    /// of text (possibly empty) after every decoding step; returning `false`
    /// cancels the generation.
    fn generate(
        &self,
        prompt: &str,
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, InferenceError>;
}
