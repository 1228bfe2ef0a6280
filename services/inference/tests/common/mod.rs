//! Where the test models are (`SOVRA_MODELS_DIR`, else the cache that
//! `scripts/setup-models` fills), and the cache-against-recomputing check.

use std::path::PathBuf;

use sovra_inference::OnnxGenerator;

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

/// Greedy decoding of `prompt` with the KV cache for `steps` tokens; at
/// each step the logits must equal those of the whole sequence run from
/// scratch, within `tolerance`. The tokens.
pub fn cache_matches_recomputing(
    g: &OnnxGenerator,
    prompt: Vec<u32>,
    steps: usize,
    tolerance: f32,
) -> Vec<u32> {
    let (tokens, cached) = g.logits_with_cache(&prompt, steps).unwrap();
    let mut seq = prompt;
    for (step, logits) in cached.iter().enumerate() {
        let fresh = g.logits_without_cache(&seq).unwrap();
        let diff = fresh
            .iter()
            .zip(logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < tolerance, "step {step}: max |difference| {diff}");
        seq.push(tokens[step]);
    }
    tokens
}
