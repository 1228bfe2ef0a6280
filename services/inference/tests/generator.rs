//! The decode loop against the tiny test model (random weights, same
//! input/output contract as the real one) and, once, against the real model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use sovra_inference::{
    ChatMessage, FinishReason, GenerationEvent, GenerationQueue, Generator, GeneratorOptions,
    InferenceError, OnnxGenerator, SamplingParams,
};

mod common;
use common::{cache_matches_recomputing, models, runtime};

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llm")
}

fn tiny(slots: usize) -> OnnxGenerator {
    OnnxGenerator::load(
        &runtime(),
        &tiny_dir(),
        &GeneratorOptions {
            slots,
            ..Default::default()
        },
    )
    .unwrap()
}

#[derive(serde::Deserialize)]
struct Expected {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_tokens: Vec<u32>,
}

fn expected() -> Expected {
    serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("expected.json")).unwrap())
        .unwrap()
}

#[test]
fn greedy_decoding_matches_onnx_runtimes_own_generation_loop() {
    let g = tiny(1);
    let e = expected();
    assert_eq!(
        g.encode(&e.prompt).unwrap(),
        e.prompt_ids,
        "tokenizer differs"
    );
    let (tokens, _) = g
        .logits_with_cache(&e.prompt_ids, e.greedy_tokens.len())
        .unwrap();
    assert_eq!(tokens, e.greedy_tokens);
}

#[test]
fn the_kv_cache_gives_the_same_logits_as_recomputing_from_scratch() {
    cache_matches_recomputing(&tiny(1), expected().prompt_ids, 16, 1e-3);
}

/// Bans the end-of-turn tokens, so generation runs to `max_tokens`.
fn no_eos(g: &OnnxGenerator) -> Vec<(u32, f32)> {
    g.config()
        .eos_token_ids
        .iter()
        .map(|&t| (t, -100.0))
        .collect()
}

fn collect(
    g: &dyn Generator,
    prompt: &str,
    p: &SamplingParams,
) -> (String, sovra_inference::Generation) {
    let mut streamed = String::new();
    let out = g
        .generate(prompt, p, &mut |piece| {
            streamed.push_str(piece);
            true
        })
        .unwrap();
    (streamed, out)
}

#[test]
fn a_character_banned_through_its_tokens_is_never_written() {
    let g = tiny(1);
    let mut bans = no_eos(&g);
    let vowels: Vec<u32> = ['e', 'a']
        .into_iter()
        .flat_map(|c| g.tokens_containing(c))
        .collect();
    assert!(!vowels.is_empty() && vowels.len() < g.vocab_size());
    bans.extend(vowels.iter().map(|&t| (t, -100.0)));
    let p = SamplingParams {
        max_tokens: 40,
        logit_bias: bans,
        ..Default::default()
    };
    let (text, out) = collect(&g, &expected().prompt, &p);
    assert_eq!(out.completion_tokens, 40);
    assert!(!text.contains(['e', 'a']), "{text:?}");
}

#[test]
fn the_first_positions_log_probabilities_are_the_models_own() {
    let g = tiny(1);
    let e = expected();
    let (_, logits) = g.logits_with_cache(&e.prompt_ids, 1).unwrap();
    let first = &logits[0];
    let max = first.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = max + first.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    let greedy = e.greedy_tokens[0];
    let other = (greedy + 1) % g.vocab_size() as u32;
    // A bias on the greedy token changes the choice, not what is reported.
    let p = SamplingParams {
        max_tokens: 3,
        logit_bias: vec![(greedy, -100.0)],
        logprobs_of: vec![greedy, other, u32::MAX],
        ..Default::default()
    };
    let (_, out) = collect(&g, &e.prompt, &p);
    let lp = &out.first_logprobs;
    assert_eq!(lp.len(), 3);
    for (i, t) in [greedy, other].into_iter().enumerate() {
        let want = first[t as usize] - log_total;
        assert!((lp[i] - want).abs() < 1e-3, "{t}: {} against {want}", lp[i]);
    }
    assert!(lp[0] > lp[1]);
    assert_eq!(lp[2], f32::NEG_INFINITY);
    // Not asked, not reported.
    let (_, out) = collect(
        &g,
        &e.prompt,
        &SamplingParams {
            max_tokens: 2,
            ..Default::default()
        },
    );
    assert!(out.first_logprobs.is_empty());
}

#[test]
fn streamed_pieces_add_up_to_the_text_and_max_tokens_is_respected() {
    let g = tiny(1);
    let p = SamplingParams {
        max_tokens: 20,
        logit_bias: no_eos(&g),
        ..Default::default()
    };
    let (streamed, out) = collect(&g, &expected().prompt, &p);
    assert_eq!(streamed, out.text);
    assert_eq!(out.completion_tokens, 20);
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.prompt_tokens, expected().prompt_ids.len());
}

#[test]
fn the_same_seed_gives_the_same_output_and_another_seed_another() {
    let g = tiny(1);
    let params = |seed| SamplingParams {
        max_tokens: 32,
        temperature: 1.0,
        top_p: 0.95,
        top_k: 100,
        seed: Some(seed),
        logit_bias: no_eos(&g),
        ..Default::default()
    };
    let prompt = expected().prompt;
    let a = collect(&g, &prompt, &params(42)).1.text;
    let b = collect(&g, &prompt, &params(42)).1.text;
    let c = collect(&g, &prompt, &params(43)).1.text;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let greedy = collect(
        &g,
        &prompt,
        &SamplingParams {
            max_tokens: 32,
            ..Default::default()
        },
    )
    .1
    .text;
    assert_ne!(
        a, greedy,
        "sampling at temperature 1 should leave the greedy path"
    );
}

#[test]
fn a_stop_sequence_ends_generation_before_it() {
    let g = tiny(1);
    let banned = no_eos(&g);
    let base = SamplingParams {
        max_tokens: 40,
        logit_bias: banned,
        ..Default::default()
    };
    let full = collect(&g, &expected().prompt, &base).1.text;
    // Stop at a piece of the greedy output's middle.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 10, "{full:?}");
    let stop: String = chars[6..9].iter().collect();
    let cut = full.find(&stop).unwrap();
    let p = SamplingParams {
        stop: vec![stop],
        ..base
    };
    let (streamed, out) = collect(&g, &expected().prompt, &p);
    assert_eq!(out.text, full[..cut]);
    assert_eq!(streamed, out.text);
    assert_eq!(out.finish_reason, FinishReason::Stop);
}

#[test]
fn returning_false_cancels_the_generation() {
    let g = tiny(1);
    let p = SamplingParams {
        max_tokens: 500,
        logit_bias: no_eos(&g),
        ..Default::default()
    };
    let mut steps = 0;
    let out = g
        .generate(&expected().prompt, &p, &mut |_| {
            steps += 1;
            steps < 5
        })
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(out.completion_tokens, 5);
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error() {
    let g = tiny(1);
    let long = "word ".repeat(g.context_tokens() * 2);
    let err = g
        .generate(&long, &SamplingParams::default(), &mut |_| true)
        .unwrap_err();
    assert!(matches!(err, InferenceError::Input(_)), "{err}");
}

#[test]
fn a_missing_model_folder_names_the_setup_command() {
    let err = OnnxGenerator::load(
        &runtime(),
        &PathBuf::from("/nonexistent/model"),
        &GeneratorOptions::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("scripts/setup-generator"), "{err}");
}

#[test]
fn the_model_folders_chat_template_is_used() {
    let g = tiny(1);
    let out = g
        .render(&[ChatMessage::new("user", "What is the leave policy?")])
        .unwrap();
    assert_eq!(out, expected().prompt);
}

#[test]
fn cuda_asked_for_without_a_cuda_runtime_is_an_error_not_a_fallback() {
    let err = OnnxGenerator::load(
        &runtime(),
        &tiny_dir(),
        &GeneratorOptions {
            provider: sovra_inference::ExecutionProvider::Cuda,
            ..Default::default()
        },
    )
    .err()
    .expect("the CPU-only ONNX Runtime library cannot provide CUDA");
    assert!(matches!(err, InferenceError::CudaUnavailable(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_refuses_past_its_capacity_and_a_dropped_receiver_frees_the_worker() {
    let g: Arc<dyn Generator> = Arc::new(tiny(1));
    let eos: Vec<(u32, f32)> = vec![(2, -100.0)];
    let queue = GenerationQueue::new(g, 1, 1, 1.0);
    let long = SamplingParams {
        max_tokens: 3000,
        logit_bias: eos,
        ..Default::default()
    };
    let prompt = expected().prompt;
    let mut first = queue.submit("t", prompt.clone(), long.clone()).unwrap();
    assert!(matches!(first.recv().await, Some(GenerationEvent::Started)));
    let mut second = queue.submit("t", prompt.clone(), long.clone()).unwrap();
    let refused = queue.submit("t", prompt.clone(), long.clone()).unwrap_err();
    assert_eq!(refused.waiting, 1);
    // Dropping the first receiver cancels it; the second then starts.
    drop(first);
    let started = tokio::time::timeout(std::time::Duration::from_secs(20), second.recv()).await;
    assert!(matches!(started, Ok(Some(GenerationEvent::Started))));
    drop(second);
    // Both finish; the queue admits again.
    for _ in 0..200 {
        if queue.admitted() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(queue.admitted(), 0);
    let mut third = queue
        .submit(
            "t",
            prompt,
            SamplingParams {
                max_tokens: 3,
                ..Default::default()
            },
        )
        .unwrap();
    let mut done = None;
    while let Some(ev) = third.recv().await {
        if let GenerationEvent::Done(g) = ev {
            done = Some(g);
        }
    }
    assert!(done.unwrap().completion_tokens <= 3);
}

/// A follow-up (the check of a finished answer) is admitted when the queue
/// is full, and goes ahead of the tenant's other waiting generations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_is_admitted_to_a_full_queue_at_the_front_of_its_line() {
    let g: Arc<dyn Generator> = Arc::new(tiny(1));
    let queue = GenerationQueue::new(g, 1, 1, 1.0);
    let long = SamplingParams {
        max_tokens: 3000,
        logit_bias: vec![(2, -100.0)],
        ..Default::default()
    };
    let prompt = expected().prompt;
    let mut running = queue.submit("t", prompt.clone(), long.clone()).unwrap();
    assert!(matches!(
        running.recv().await,
        Some(GenerationEvent::Started)
    ));
    let mut waiting = queue.submit("t", prompt.clone(), long.clone()).unwrap();
    assert!(queue.submit("t", prompt.clone(), long.clone()).is_err());
    let short = SamplingParams {
        max_tokens: 2,
        ..Default::default()
    };
    let mut follow_up = queue.submit_follow_up("t", prompt, short).unwrap();
    drop(running);
    // The follow-up starts first and finishes while the other still waits.
    let started = tokio::time::timeout(std::time::Duration::from_secs(20), follow_up.recv()).await;
    assert!(matches!(started, Ok(Some(GenerationEvent::Started))));
    let mut done = false;
    while let Some(ev) = follow_up.recv().await {
        done |= matches!(ev, GenerationEvent::Done(_));
    }
    assert!(done);
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), waiting.recv()).await;
    assert!(matches!(next, Ok(Some(GenerationEvent::Started))));
}

/// The real model (scripts/setup-generator): its own template and a
/// sensible greedy answer.
#[test]
fn the_real_model_answers_a_simple_question() {
    let dir = models().join("qwen2.5-coder-0.5b-instruct");
    let g = OnnxGenerator::load(&runtime(), &dir, &GeneratorOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let prompt = g
        .render(&[
            ChatMessage::new("system", "You are a helpful assistant."),
            ChatMessage::new(
                "user",
                "What is the capital of France? Answer in one sentence.",
            ),
        ])
        .unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"));
    let out = collect(
        &g,
        &prompt,
        &SamplingParams {
            max_tokens: 24,
            ..Default::default()
        },
    )
    .1;
    assert!(out.text.contains("Paris"), "{}", out.text);
    assert_eq!(out.finish_reason, FinishReason::Stop, "{}", out.text);
}

/// The same weights built for CUDA (float16 activations and KV cache), run
/// by the CPU provider: the loop's float16 path without a GPU.
#[test]
fn a_float16_model_built_for_cuda_runs_the_same_loop() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llm-fp16");
    let g = OnnxGenerator::load(&runtime(), &dir, &GeneratorOptions::default()).unwrap();
    let tokens = cache_matches_recomputing(&g, expected().prompt_ids, 8, 5e-2);
    // Float16 and float32 builds of the same weights agree on the first tokens.
    assert_eq!(tokens[..4], expected().greedy_tokens[..4]);
    let out = collect(
        &g,
        &expected().prompt,
        &SamplingParams {
            max_tokens: 6,
            ..Default::default()
        },
    )
    .1;
    assert!(out.completion_tokens >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_holds_at_most_its_share_and_a_freed_slot_goes_to_the_tenant_with_fewest_running()
 {
    let g: Arc<dyn Generator> = Arc::new(tiny(2));
    let long = SamplingParams {
        max_tokens: 3000,
        logit_bias: vec![(2, -100.0)],
        ..Default::default()
    };
    let prompt = expected().prompt;
    // Two slots, four waiting places, one tenant at most half of them.
    let queue = GenerationQueue::new(g, 2, 4, 0.5);
    let submit = |tenant: &str| queue.submit(tenant, prompt.clone(), long.clone());
    let mut a1 = submit("a").unwrap();
    let mut a2 = submit("a").unwrap();
    for h in [&mut a1, &mut a2] {
        assert!(matches!(h.recv().await, Some(GenerationEvent::Started)));
    }
    let mut a3 = submit("a").unwrap();
    let _a4 = submit("a").unwrap();
    // Tenant a holds its two waiting places; the queue still has room for b.
    assert!(submit("a").is_err());
    let mut b1 = submit("b").unwrap();
    assert_eq!(queue.admitted(), 5);
    // a1 leaves: a3 waited longer, but b has nothing running.
    drop(a1);
    let started = tokio::time::timeout(std::time::Duration::from_secs(20), b1.recv()).await;
    assert!(matches!(started, Ok(Some(GenerationEvent::Started))));
    let a3_started = tokio::time::timeout(std::time::Duration::from_millis(300), a3.recv()).await;
    assert!(a3_started.is_err(), "a3 started before b1's turn was over");
    // A caller that leaves while waiting frees its place at once.
    drop(a3);
    for _ in 0..100 {
        if queue.admitted() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(queue.admitted(), 3);
}
