//! Sovra's generator on the real model, in one run:
//! 1. one stream: time to first token and decode tokens/s for one prompt,
//!    greedy, a fixed number of new tokens (the end-of-turn tokens are
//!    banned so every run generates all of them);
//! 2. the memory-bandwidth ceiling: a plain copy's bandwidth divided by the
//!    bytes of weights read per token (`BENCH_WEIGHT_BYTES`, computed by
//!    `bench/generate` from the model file);
//! 3. concurrency: 1, 4 and 8 short chat prompts at once through the same
//!    batching engine: aggregate tokens/s and median time to first token.
//!
//! `bench/generate` runs this beside ONNX Runtime's own loop
//! (onnxruntime-genai) on the same model and prompt and prints the ratios.
//!
//!   cargo bench -p sovra-inference --bench generate -- PROMPT_FILE NEW_TOKENS RUNS [CONCURRENT_TOKENS]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

use sovra_inference::{
    ChatMessage, Generation, Generator, GeneratorOptions, OnnxGenerator, SamplingParams,
};

/// The same questions as the HTTP bench (`bench/generate_http.py`).
const QUESTIONS: &str = include_str!("../../../bench/generate_questions.txt");

/// Bytes moved per second by a plain copy of a buffer far larger than the
/// caches (read plus write, as STREAM's Copy counts), best of five.
fn copy_bandwidth() -> f64 {
    let n = 512 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    (2 * n) as f64 / best
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let prompt_file = args
        .first()
        .expect("usage: generate PROMPT_FILE [NEW_TOKENS] [RUNS] [CONCURRENT_TOKENS]");
    let new_tokens: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(128);
    let runs: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(3);
    let concurrent_tokens: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(64);
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
    let load = |batch_invariant: bool| {
        OnnxGenerator::load(
            &models.join("onnxruntime/libonnxruntime.so.1.32.0"),
            &models.join(&model),
            &GeneratorOptions {
                intra_threads: threads,
                slots: 8,
                context_tokens: std::env::var("BENCH_CONTEXT")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(4096),
                batch_invariant,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let prompt = std::fs::read_to_string(prompt_file).unwrap();
    // One stream, batch-invariant (the default) and not.
    let mut g = None;
    for (mode, invariant) in [("invariant", true), ("fast", false)] {
        let generator = load(invariant);
        let params = SamplingParams {
            max_tokens: new_tokens,
            logit_bias: generator
                .config()
                .eos_token_ids
                .iter()
                .map(|&t| (t, -1000.0))
                .collect(),
            ..Default::default()
        };
        // One warm-up run (allocator, thread pool), then the measured runs.
        generator
            .generate(
                &prompt,
                &SamplingParams {
                    max_tokens: 4,
                    ..params.clone()
                },
                &mut |_| true,
            )
            .unwrap();
        for _ in 0..runs {
            let out = generator.generate(&prompt, &params, &mut |_| true).unwrap();
            assert_eq!(out.completion_tokens, new_tokens);
            let decode_s = (out.total_ms - out.first_token_ms) / 1e3;
            println!(
                "sovra mode={mode} prompt_tokens={} new_tokens={} ttft_ms={:.1} decode_tok_s={:.2}",
                out.prompt_tokens,
                out.completion_tokens,
                out.first_token_ms,
                (out.completion_tokens - 1) as f64 / decode_s
            );
        }
        if invariant {
            g = Some((generator, params));
        }
    }
    let (g, params) = g.unwrap();

    let bandwidth = copy_bandwidth();
    let weights: f64 = std::env::var("BENCH_WEIGHT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    println!(
        "ceiling copy_gb_s={:.1} weight_mb={:.0} ceiling_tok_s={:.1}",
        bandwidth / 1e9,
        weights / 1e6,
        if weights > 0.0 {
            bandwidth / weights
        } else {
            0.0
        }
    );

    let prompts: Vec<String> = QUESTIONS
        .lines()
        .filter(|q| !q.trim().is_empty())
        .map(|q| g.render(&[ChatMessage::new("user", q.trim())]).unwrap())
        .collect();
    let short = SamplingParams {
        max_tokens: concurrent_tokens,
        ..params.clone()
    };
    for n in [1usize, 4, 8] {
        let started = Instant::now();
        let outs: Vec<Generation> = std::thread::scope(|s| {
            let handles: Vec<_> = prompts[..n]
                .iter()
                .map(|p| {
                    let g = &g;
                    let short = &short;
                    s.spawn(move || g.generate(p, short, &mut |_| true).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wall = started.elapsed().as_secs_f64();
        let tokens: usize = outs.iter().map(|o| o.completion_tokens).sum();
        // Decoding throughput: tokens after each one's first, over the
        // window from the earliest first token to the last end.
        let window_ms = outs.iter().map(|o| o.total_ms).fold(0.0, f64::max)
            - outs
                .iter()
                .map(|o| o.first_token_ms)
                .fold(f64::MAX, f64::min);
        println!(
            "concurrent n={n} tokens={tokens} wall_s={wall:.2} tok_s={:.2} decode_tok_s={:.2} median_ttft_ms={:.1} mean_batch={:.2}",
            tokens as f64 / wall,
            (tokens - n) as f64 / (window_ms / 1e3),
            median(outs.iter().map(|o| o.first_token_ms).collect()),
            outs.iter().map(|o| o.mean_batch).sum::<f64>() / n as f64,
        );
    }
}
