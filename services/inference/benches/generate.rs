//! Sovra's decode loop on the real model: time to first token and decode
//! tokens/s for one prompt, greedy, a fixed number of new tokens (the
//! end-of-turn tokens are banned so every run generates all of them).
//! `bench/generate` runs this beside ONNX Runtime's own loop
//! (onnxruntime-genai) on the same model and prompt and prints the ratio.
//!
//!   cargo bench -p sovra-inference --bench generate -- PROMPT_FILE NEW_TOKENS RUNS

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use sovra_inference::{Generator, GeneratorOptions, OnnxGenerator, SamplingParams};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let prompt_file = args
        .first()
        .expect("usage: generate PROMPT_FILE [NEW_TOKENS] [RUNS]");
    let new_tokens: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(128);
    let runs: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(3);
    let models = std::env::var("SOVRA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sovra/models")
        });
    let model =
        std::env::var("SOVRA_BENCH_MODEL").unwrap_or_else(|_| "qwen2.5-coder-0.5b-instruct".into());
    let threads: usize = std::env::var("SOVRA_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let g = OnnxGenerator::load(
        &models.join("onnxruntime/libonnxruntime.so.1.32.0"),
        &models.join(&model),
        &GeneratorOptions {
            intra_threads: threads,
            ..Default::default()
        },
    )
    .unwrap();
    let prompt = std::fs::read_to_string(prompt_file).unwrap();
    let params = SamplingParams {
        max_tokens: new_tokens,
        logit_bias: g
            .config()
            .eos_token_ids
            .iter()
            .map(|&t| (t, -1000.0))
            .collect(),
        ..Default::default()
    };
    // One warm-up run (allocator, thread pool), then the measured runs.
    g.generate(
        &prompt,
        &SamplingParams {
            max_tokens: 4,
            ..params.clone()
        },
        &mut |_| true,
    )
    .unwrap();
    for _ in 0..runs {
        let out = g.generate(&prompt, &params, &mut |_| true).unwrap();
        assert_eq!(out.completion_tokens, new_tokens);
        let decode_s = (out.total_ms - out.first_token_ms) / 1e3;
        println!(
            "sovra prompt_tokens={} new_tokens={} ttft_ms={:.1} decode_tok_s={:.2}",
            out.prompt_tokens,
            out.completion_tokens,
            out.first_token_ms,
            (out.completion_tokens - 1) as f64 / decode_s
        );
    }
}
