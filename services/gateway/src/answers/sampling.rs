//! The sampling settings a request may carry (OpenAI's names), checked
//! against the configured limits.

use std::collections::BTreeMap;

use serde::Deserialize;
use sovra_inference::SamplingParams;

use crate::problem::Problem;
use crate::state::AppState;

/// Generation settings a request may carry (OpenAI's names).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingRequest {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub repetition_penalty: Option<f32>,
    pub stop: Option<Stop>,
    /// Token id (as a string) to a bias in [-100, 100].
    #[serde(default)]
    pub logit_bias: BTreeMap<String, f32>,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Validates `k` against the configured limits; `prefix` is prepended to
/// the field named in an error (`generation.` for `/v1/query`).
pub fn validate(
    state: &AppState,
    k: SamplingRequest,
    prefix: &str,
) -> Result<SamplingParams, Problem> {
    let g = &state.settings.generator;
    let field = |name: &str| format!("{prefix}{name}");
    let max_tokens = k.max_tokens.unwrap_or(g.default_max_tokens);
    if max_tokens == 0 || max_tokens > g.max_tokens_limit {
        return Err(Problem::invalid_parameter(
            &field("max_tokens"),
            format!("must be between 1 and {}", g.max_tokens_limit),
        ));
    }
    let temperature = k.temperature.unwrap_or(g.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(Problem::invalid_parameter(
            &field("temperature"),
            "must be between 0 and 2",
        ));
    }
    let top_p = k.top_p.unwrap_or(g.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Problem::invalid_parameter(
            &field("top_p"),
            "must be in (0, 1]",
        ));
    }
    let vocab = state.answerer.generation().generator().vocab_size();
    let top_k = k.top_k.unwrap_or(g.top_k);
    if top_k > vocab {
        return Err(Problem::invalid_parameter(
            &field("top_k"),
            format!("must be at most {vocab}"),
        ));
    }
    let repetition_penalty = k.repetition_penalty.unwrap_or(g.repetition_penalty);
    if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
        return Err(Problem::invalid_parameter(
            &field("repetition_penalty"),
            "must be in (0, 10]",
        ));
    }
    let stop = match k.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.chars().count() > 64) {
        return Err(Problem::invalid_parameter(
            &field("stop"),
            "at most 4 sequences of 1 to 64 characters",
        ));
    }
    let mut logit_bias = Vec::with_capacity(k.logit_bias.len());
    if k.logit_bias.len() > 300 {
        return Err(Problem::invalid_parameter(
            &field("logit_bias"),
            "at most 300 tokens",
        ));
    }
    for (token, bias) in k.logit_bias {
        let id = token
            .parse::<u32>()
            .ok()
            .filter(|&t| (t as usize) < vocab)
            .ok_or_else(|| {
                Problem::invalid_parameter(
                    &field("logit_bias"),
                    format!("keys must be token ids below {vocab}"),
                )
            })?;
        if !(-100.0..=100.0).contains(&bias) {
            return Err(Problem::invalid_parameter(
                &field("logit_bias"),
                "biases must be between -100 and 100",
            ));
        }
        logit_bias.push((id, bias));
    }
    Ok(SamplingParams {
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed: k.seed,
        repetition_penalty,
        stop,
        logit_bias,
        logprobs_of: Vec::new(),
    })
}
