//! Continuous batching: sequences joining and leaving a running batch,
//! cancellation mid-batch, mixed sampling settings, the reuse of a freed
//! KV cache slot, chunked prefill, and the same greedy output alone or in a
//! batch: with the tiny test model, and once with the real one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sovra_inference::{
    ChatMessage, FinishReason, Generation, Generator, GeneratorOptions, OnnxGenerator,
    SamplingParams,
};

mod common;
use common::{cache_matches_recomputing, models, runtime};

fn load(dir: &Path, slots: usize, prefill_chunk: usize) -> OnnxGenerator {
    OnnxGenerator::load(
        &runtime(),
        dir,
        &GeneratorOptions {
            slots,
            prefill_chunk,
            context_tokens: 1024,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn tiny(slots: usize, prefill_chunk: usize) -> OnnxGenerator {
    load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llm"),
        slots,
        prefill_chunk,
    )
}

const QUESTIONS: [&str; 6] = [
    "What is the leave policy?",
    "How are treasury limits approved?",
    "Who signs off a payment above the limit?",
    "When must a nurse wash hands?",
    "Summarise the annual leave carry-over rule in one sentence, please.",
    "Is remote work allowed?",
];

fn prompts(g: &OnnxGenerator) -> Vec<String> {
    QUESTIONS
        .iter()
        .map(|q| g.render(&[ChatMessage::new("user", *q)]).unwrap())
        .collect()
}

/// Greedy, never ending early (end-of-turn banned).
fn greedy(g: &OnnxGenerator, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        logit_bias: g
            .config()
            .eos_token_ids
            .iter()
            .map(|&t| (t, -100.0))
            .collect(),
        ..Default::default()
    }
}

fn generate(g: &OnnxGenerator, prompt: &str, p: &SamplingParams) -> Generation {
    g.generate(prompt, p, &mut |_| true).unwrap()
}

/// Each prompt with its parameters, all at once from threads of their own.
fn together(g: &OnnxGenerator, jobs: &[(String, SamplingParams)]) -> Vec<Generation> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(prompt, p)| s.spawn(move || generate(g, prompt, p)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Each job run alone on `alone`, then all at once on `batched`: the same
/// text, finish reason and token count. The batched generations.
fn same_alone_and_together(
    alone: &OnnxGenerator,
    batched: &OnnxGenerator,
    jobs: &[(String, SamplingParams)],
) -> Vec<Generation> {
    let expected: Vec<Generation> = jobs.iter().map(|(q, p)| generate(alone, q, p)).collect();
    let got = together(batched, jobs);
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(g.text, e.text);
        assert_eq!(g.finish_reason, e.finish_reason);
        assert_eq!(g.completion_tokens, e.completion_tokens);
    }
    got
}

#[test]
fn greedy_output_is_the_same_alone_and_in_a_batch() {
    let alone = tiny(1, 512);
    let batched = tiny(4, 512);
    let p = greedy(&alone, 40);
    let jobs: Vec<(String, SamplingParams)> = prompts(&alone)
        .into_iter()
        .map(|q| (q, p.clone()))
        .collect();
    let got = same_alone_and_together(&alone, &batched, &jobs);
    assert!(got.iter().all(|g| g.completion_tokens == 40));
    // Six sequences in four slots: some decoded together.
    assert!(
        got.iter().any(|g| g.mean_batch > 1.5),
        "{:?}",
        got.iter().map(|g| g.mean_batch).collect::<Vec<_>>()
    );
}

#[test]
fn chunked_prefill_gives_the_same_logits_as_recomputing() {
    // Five-token chunks: the prompt is read in several steps.
    let g = tiny(2, 5);
    let prompt = g
        .encode(&g.render(&[ChatMessage::new("user", QUESTIONS[4])]).unwrap())
        .unwrap();
    assert!(prompt.len() > 15);
    cache_matches_recomputing(&g, prompt, 8, 1e-3);
    // And the same text as whole-prompt prefill.
    let whole = tiny(1, 512);
    let p = greedy(&whole, 24);
    let q = &prompts(&whole)[4];
    assert_eq!(generate(&g, q, &p).text, generate(&whole, q, &p).text);
}

#[test]
fn sequences_join_and_leave_a_running_batch() {
    let alone = tiny(1, 512);
    let g = tiny(3, 512);
    let qs = prompts(&g);
    let long = greedy(&g, 300);
    let short = greedy(&g, 12);
    let expected_long = generate(&alone, &qs[0], &long).text;
    let expected_short: Vec<String> = qs[1..5]
        .iter()
        .map(|q| generate(&alone, q, &short).text)
        .collect();
    let produced = AtomicUsize::new(0);
    let (long_out, shorts) = std::thread::scope(|s| {
        let long_run = s.spawn(|| {
            g.generate(&qs[0], &long, &mut |_| {
                produced.fetch_add(1, Ordering::SeqCst);
                true
            })
            .unwrap()
        });
        // The short ones join once the long one is decoding, two at a
        // time, and leave long before it ends.
        while produced.load(Ordering::SeqCst) < 20 {
            std::thread::yield_now();
        }
        let mut shorts = Vec::new();
        for pair in qs[1..5].chunks(2) {
            let jobs: Vec<(String, SamplingParams)> =
                pair.iter().map(|q| (q.clone(), short.clone())).collect();
            shorts.extend(together(&g, &jobs));
        }
        (long_run.join().unwrap(), shorts)
    });
    assert_eq!(long_out.text, expected_long);
    assert_eq!(long_out.completion_tokens, 300);
    assert!(long_out.mean_batch > 1.0, "{}", long_out.mean_batch);
    for (e, got) in expected_short.iter().zip(&shorts) {
        assert_eq!(&got.text, e);
        assert_eq!(got.finish_reason, FinishReason::Length);
    }
}

#[test]
fn cancelling_one_sequence_mid_batch_leaves_the_others_intact() {
    let alone = tiny(1, 512);
    let g = tiny(3, 512);
    let qs = prompts(&g);
    let p = greedy(&g, 60);
    let expected: Vec<String> = qs[..2]
        .iter()
        .map(|q| generate(&alone, q, &p).text)
        .collect();
    let (cancelled, others) = std::thread::scope(|s| {
        let c = s.spawn(|| {
            let mut pieces = 0;
            g.generate(&qs[2], &p, &mut |_| {
                pieces += 1;
                pieces < 6
            })
            .unwrap()
        });
        let others = together(
            &g,
            &[(qs[0].clone(), p.clone()), (qs[1].clone(), p.clone())],
        );
        (c.join().unwrap(), others)
    });
    assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
    assert_eq!(cancelled.completion_tokens, 6);
    for (e, got) in expected.iter().zip(&others) {
        assert_eq!(&got.text, e);
    }
    // The cancelled sequence's slot is free again: a new one runs.
    assert_eq!(generate(&g, &qs[3], &p).completion_tokens, 60);
}

#[test]
fn each_sequence_keeps_its_own_sampling_settings_in_a_batch() {
    let alone = tiny(1, 512);
    let g = tiny(4, 512);
    let qs = prompts(&g);
    let greedy_p = greedy(&g, 30);
    let sampled = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        seed: Some(7),
        ..greedy_p.clone()
    };
    let penalised = SamplingParams {
        repetition_penalty: 1.3,
        max_tokens: 25,
        ..greedy_p.clone()
    };
    let greedy_text = generate(&alone, &qs[2], &greedy_p).text;
    let cut: String = greedy_text.chars().skip(8).take(3).collect();
    let stopped = SamplingParams {
        stop: vec![cut],
        ..greedy_p.clone()
    };
    let jobs = vec![
        (qs[0].clone(), greedy_p.clone()),
        (qs[1].clone(), sampled),
        (qs[2].clone(), stopped),
        (qs[3].clone(), penalised),
    ];
    let got = same_alone_and_together(&alone, &g, &jobs);
    assert_eq!(got[2].finish_reason, FinishReason::Stop);
    assert_eq!(got[3].completion_tokens, 25);
    // The sampled one differs from greedy on the same prompt.
    assert_ne!(got[1].text, generate(&alone, &qs[1], &greedy_p).text);
}

#[test]
fn a_freed_slot_is_reused_without_leftovers() {
    // One slot: a long sequence fills it far, then a short one takes it.
    let g = tiny(1, 512);
    let fresh = tiny(1, 512);
    let qs = prompts(&g);
    let _ = generate(&g, &qs[4], &greedy(&g, 400));
    let p = greedy(&g, 30);
    assert_eq!(
        generate(&g, &qs[5], &p).text,
        generate(&fresh, &qs[5], &p).text
    );
    let (_, cached) = g
        .logits_with_cache(&fresh.encode(&qs[5]).unwrap(), 1)
        .unwrap();
    let reference = fresh
        .logits_without_cache(&fresh.encode(&qs[5]).unwrap())
        .unwrap();
    let diff = reference
        .iter()
        .zip(&cached[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "max |diff| {diff}");
}

/// The real model (scripts/setup-generator): four questions greedy, one at a
/// time and together, word for word the same.
#[test]
fn the_real_model_decodes_the_same_alone_and_in_a_batch() {
    let dir = models().join("qwen2.5-coder-0.5b-instruct");
    let alone = load(&dir, 4, 512);
    let g = load(&dir, 4, 512);
    let p = SamplingParams {
        max_tokens: 24,
        ..Default::default()
    };
    let jobs: Vec<(String, SamplingParams)> = prompts(&g)
        .into_iter()
        .take(4)
        .map(|q| (q, p.clone()))
        .collect();
    let got = same_alone_and_together(&alone, &g, &jobs);
    assert!(got.iter().any(|g| g.mean_batch > 1.5));
}

/// The real model: a prompt read in seven-token chunks (whose last would be
/// a single token, which the quantized products compute differently) gives
/// the same logits as read whole.
#[test]
fn the_real_model_reads_a_prompt_in_chunks_to_the_same_logits() {
    let dir = models().join("qwen2.5-coder-0.5b-instruct");
    let whole = load(&dir, 2, 512);
    let chunked = load(&dir, 2, 7);
    let mut prompt = whole
        .encode(
            &whole
                .render(&[ChatMessage::new("user", QUESTIONS[4])])
                .unwrap(),
        )
        .unwrap();
    // 43 tokens: six chunks of seven and one token left over.
    assert!(prompt.len() >= 43, "{} tokens", prompt.len());
    prompt.truncate(43);
    let (a, la) = whole.logits_with_cache(&prompt, 6).unwrap();
    let (b, lb) = chunked.logits_with_cache(&prompt, 6).unwrap();
    assert_eq!(a, b);
    assert_eq!(la, lb);
}
