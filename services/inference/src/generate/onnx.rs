//! A decoder-only model exported by ONNX Runtime's model builder
//! (`onnxruntime_genai.models.builder`), run by `ort`: the model's files,
//! its tokenizer and chat template, and each generation's text (streaming,
//! stop sequences), while the batching engine (`batch.rs`) decodes the
//! sequences together. A reference path without the engine (a fresh run
//! from an empty cache) is kept for the tests.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType};
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::batch::{CacheShape, Engine, Job, Step};
use super::template::ChatTemplate;
use super::text::TextStream;
use super::{ChatMessage, FinishReason, Generation, Generator, SamplingParams};
use crate::{ExecutionProvider, InferenceError, rt};

/// What the decode loop needs to know of the model, read from the builder's
/// `genai_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_size: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub eos_token_ids: Vec<u32>,
    past_key: String,
    past_value: String,
    present_key: String,
    present_value: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct GenaiConfig {
    model: GenaiModel,
}

#[derive(Deserialize)]
struct GenaiModel {
    context_length: usize,
    eos_token_id: OneOrMany,
    vocab_size: usize,
    decoder: GenaiDecoder,
}

#[derive(Deserialize)]
struct GenaiDecoder {
    head_size: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    #[serde(default)]
    inputs: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    outputs: std::collections::BTreeMap<String, String>,
}

impl DecoderConfig {
    pub fn from_genai_config(json: &str) -> Result<Self, InferenceError> {
        let c: GenaiConfig = serde_json::from_str(json)
            .map_err(|e| InferenceError::Model(format!("genai_config.json: {e}")))?;
        let d = c.model.decoder;
        let name = |map: &std::collections::BTreeMap<String, String>, key: &str, default: &str| {
            map.get(key).cloned().unwrap_or_else(|| default.to_owned())
        };
        Ok(Self {
            layers: d.num_hidden_layers,
            kv_heads: d.num_key_value_heads,
            head_size: d.head_size,
            vocab_size: c.model.vocab_size,
            context_length: c.model.context_length,
            eos_token_ids: match c.model.eos_token_id {
                OneOrMany::One(t) => vec![t],
                OneOrMany::Many(v) => v,
            },
            past_key: name(&d.inputs, "past_key_names", "past_key_values.%d.key"),
            past_value: name(&d.inputs, "past_value_names", "past_key_values.%d.value"),
            present_key: name(&d.outputs, "present_key_names", "present.%d.key"),
            present_value: name(&d.outputs, "present_value_names", "present.%d.value"),
        })
    }

    pub(super) fn past_names(&self) -> Vec<String> {
        (0..self.layers)
            .flat_map(|i| {
                [
                    self.past_key.replace("%d", &i.to_string()),
                    self.past_value.replace("%d", &i.to_string()),
                ]
            })
            .collect()
    }

    pub(super) fn present_names(&self) -> Vec<String> {
        (0..self.layers)
            .flat_map(|i| {
                [
                    self.present_key.replace("%d", &i.to_string()),
                    self.present_value.replace("%d", &i.to_string()),
                ]
            })
            .collect()
    }
}

pub struct OnnxGenerator {
    engine: Engine,
    /// A session of its own for [`Self::logits_without_cache`] (tests),
    /// built on first use.
    reference: Mutex<Option<Session>>,
    env: &'static ort::environment::Environment,
    model_path: PathBuf,
    options: GeneratorOptions,
    /// Tokens of prompt and completion together (the KV cache's length).
    context: usize,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    config: DecoderConfig,
    /// The element type of the KV cache (float32 for CPU builds, float16 for CUDA builds).
    kv_type: TensorElementType,
    has_position_ids: bool,
    model_id: String,
    provider: ExecutionProvider,
}

/// Options for [`OnnxGenerator::load`].
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    pub provider: ExecutionProvider,
    pub cuda_device: i32,
    pub intra_threads: usize,
    /// Sequences decoded together (KV cache slots).
    pub slots: usize,
    /// Prompt plus completion per sequence; 0: the model's own context.
    /// Each slot's cache holds this many tokens.
    pub context_tokens: usize,
    /// Most prompt tokens prefilled in one step, between decoding steps of
    /// the other sequences.
    pub prefill_chunk: usize,
    /// A sequence's output does not depend on whether it ran alone or in a
    /// batch (a lone sequence decodes beside a placeholder row).
    pub batch_invariant: bool,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            provider: ExecutionProvider::Cpu,
            cuda_device: 0,
            intra_threads: 2,
            slots: 1,
            context_tokens: 0,
            prefill_chunk: 512,
            batch_invariant: true,
        }
    }
}

fn required(dir: &Path, name: &str) -> Result<PathBuf, InferenceError> {
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(InferenceError::GeneratorMissing(p.display().to_string()))
    }
}

impl OnnxGenerator {
    /// Loads the model folder made by `scripts/setup-generator` (or the test
    /// model): `model.onnx`, `genai_config.json`, `tokenizer.json` and the
    /// chat template (`chat_template.jinja`, or `tokenizer_config.json`'s).
    pub fn load(
        runtime: &Path,
        dir: &Path,
        options: &GeneratorOptions,
    ) -> Result<Self, InferenceError> {
        let env = crate::init_runtime(runtime)?;
        let model = required(dir, "model.onnx")?;
        let config =
            DecoderConfig::from_genai_config(&read(&required(dir, "genai_config.json")?)?)?;
        let tokenizer = Tokenizer::from_file(required(dir, "tokenizer.json")?)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let template = ChatTemplate::new(chat_template(dir)?)?;
        let model_id = model_id(dir);

        let session = build_session(env, &model, options)?;
        let first = &session;
        let names: Vec<&str> = first.inputs().iter().map(|o| o.name()).collect();
        for required in ["input_ids", "attention_mask"]
            .into_iter()
            .map(str::to_owned)
            .chain(config.past_names())
        {
            if !names.contains(&required.as_str()) {
                return Err(InferenceError::Model(format!(
                    "{} has no input `{required}`: not a decoder with a KV cache from ONNX Runtime's model builder",
                    model.display()
                )));
            }
        }
        let has_position_ids = names.contains(&"position_ids");
        let past0 = config.past_names().into_iter().next().unwrap_or_default();
        let kv_type = first
            .inputs()
            .iter()
            .find(|o| o.name() == past0)
            .and_then(|o| o.dtype().tensor_type())
            .unwrap_or(TensorElementType::Float32);
        let context = match options.context_tokens {
            0 => config.context_length,
            n => n.min(config.context_length),
        };
        let slots = options.slots.max(1);
        tracing::info!(
            model = %model_id,
            layers = config.layers,
            context,
            provider = ?options.provider,
            slots,
            "generator loaded"
        );
        let engine = Engine::start(
            session,
            config.clone(),
            kv_type,
            has_position_ids,
            CacheShape {
                slots,
                max_len: context,
                prefill_chunk: options.prefill_chunk,
                cuda_device: (options.provider == ExecutionProvider::Cuda)
                    .then_some(options.cuda_device),
                batch_invariant: options.batch_invariant,
            },
        )?;
        Ok(Self {
            engine,
            reference: Mutex::new(None),
            env,
            model_path: model,
            options: options.clone(),
            context,
            tokenizer,
            template,
            config,
            kv_type,
            has_position_ids,
            model_id,
            provider: options.provider,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Token ids of `text` as a prompt (special tokens such as `<|im_start|>`
    /// written by the chat template are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, InferenceError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    fn empty_past(&self) -> Result<Vec<DynValue>, InferenceError> {
        let shape = vec![
            1i64,
            self.config.kv_heads as i64,
            0,
            self.config.head_size as i64,
        ];
        (0..self.config.layers * 2)
            .map(|_| match self.kv_type {
                TensorElementType::Float16 => {
                    Tensor::from_array((shape.clone(), Vec::<half::f16>::new()))
                        .map(|t| t.into_dyn())
                        .map_err(rt)
                }
                _ => Tensor::from_array((shape.clone(), Vec::<f32>::new()))
                    .map(|t| t.into_dyn())
                    .map_err(rt),
            })
            .collect()
    }

    /// One forward pass over `ids` after `past` (of `past_len` tokens):
    /// the last position's logits and the new cache.
    fn step(
        &self,
        session: &mut Session,
        ids: &[u32],
        past: Vec<DynValue>,
        past_len: usize,
    ) -> Result<(Vec<f32>, Vec<DynValue>), InferenceError> {
        let seq = ids.len();
        let total = past_len + seq;
        let mut inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> =
            Vec::with_capacity(3 + past.len());
        let input_ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        inputs.push((
            "input_ids".into(),
            Tensor::from_array((vec![1i64, seq as i64], input_ids))
                .map_err(rt)?
                .into(),
        ));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array((vec![1i64, total as i64], vec![1i64; total]))
                .map_err(rt)?
                .into(),
        ));
        if self.has_position_ids {
            let positions: Vec<i64> = (past_len as i64..total as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array((vec![1i64, seq as i64], positions))
                    .map_err(rt)?
                    .into(),
            ));
        }
        for (name, value) in self.config.past_names().into_iter().zip(past) {
            inputs.push((name.into(), value.into()));
        }
        let mut outputs = session.run(inputs).map_err(rt)?;
        let vocab = self.config.vocab_size;
        let logits = {
            let value = &outputs["logits"];
            match value.dtype().tensor_type() {
                Some(TensorElementType::Float16) => {
                    let (_, data) = value.try_extract_tensor::<half::f16>().map_err(rt)?;
                    last_row(data, seq, vocab)?
                        .iter()
                        .map(|x| x.to_f32())
                        .collect::<Vec<f32>>()
                }
                _ => {
                    let (_, data) = value.try_extract_tensor::<f32>().map_err(rt)?;
                    last_row(data, seq, vocab)?.to_vec()
                }
            }
        };
        let mut present = Vec::with_capacity(self.config.layers * 2);
        for name in self.config.present_names() {
            present.push(
                outputs
                    .remove(&name)
                    .ok_or_else(|| InferenceError::Model(format!("no output `{name}`")))?,
            );
        }
        Ok((logits, present))
    }

    /// Logits of the last position of `ids`, computed without a cache
    /// (from scratch, in a session of its own): the reference the cached
    /// loop is tested against.
    pub fn logits_without_cache(&self, ids: &[u32]) -> Result<Vec<f32>, InferenceError> {
        let mut reference = self
            .reference
            .lock()
            .map_err(|_| rt("reference session lock poisoned"))?;
        if reference.is_none() {
            *reference = Some(build_session(self.env, &self.model_path, &self.options)?);
        }
        let session = reference
            .as_mut()
            .ok_or_else(|| rt("no reference session"))?;
        let past = self.empty_past()?;
        self.step(session, ids, past, 0).map(|(logits, _)| logits)
    }

    /// Greedy continuation of `prompt` for `steps` tokens through the
    /// batching engine (its KV cache), returning each step's logits (for
    /// tests against [`Self::logits_without_cache`]).
    pub fn logits_with_cache(
        &self,
        prompt: &[u32],
        steps: usize,
    ) -> Result<(Vec<u32>, Vec<Vec<f32>>), InferenceError> {
        let params = SamplingParams {
            max_tokens: steps,
            ..SamplingParams::default()
        };
        let (tx, rx) = mpsc::channel();
        self.engine.submit(Job {
            prompt: prompt.to_vec(),
            params,
            max_tokens: steps,
            cancel: Arc::new(AtomicBool::new(false)),
            steps: tx,
            trace_logits: true,
            ignore_eos: true,
        })?;
        let mut tokens = Vec::new();
        let mut all = Vec::new();
        loop {
            match rx.recv() {
                Ok(Step::Logits(l)) => all.push(l),
                Ok(Step::Logprobs(_)) => {}
                Ok(Step::Token { token, .. }) => tokens.push(token),
                Ok(Step::End(_)) => return Ok((tokens, all)),
                Ok(Step::Failed(e)) => return Err(e),
                Err(_) => return Err(rt("the decoding thread stopped")),
            }
        }
    }

    /// One sequence through the batching engine: its tokens become text
    /// here, in the caller's thread (stop sequences, streaming), while the
    /// engine decodes it together with the others.
    fn run(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str) -> bool,
        started: Instant,
    ) -> Result<Generation, InferenceError> {
        let budget = self.context.saturating_sub(prompt.len());
        let max_tokens = params.max_tokens.min(budget);
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        self.engine.submit(Job {
            prompt: prompt.to_vec(),
            params: params.clone(),
            max_tokens,
            cancel: Arc::clone(&cancel),
            steps: tx,
            trace_logits: false,
            ignore_eos: false,
        })?;
        // The engine stops the sequence at its next step when this returns
        // early (a stop sequence, the caller gone, an error).
        let _stop = StopOnDrop(cancel);
        let mut text = TextStream::new(&params.stop);
        let mut generated: Vec<u32> = Vec::new();
        let mut first_token_ms = None;
        let mut decoded = String::new();
        let mut batch_sum = 0usize;
        let mut first_logprobs = Vec::new();
        let finish = loop {
            let step = rx.recv().map_err(|_| rt("the decoding thread stopped"))?;
            if first_token_ms.is_none() {
                first_token_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            }
            let next = match step {
                Step::Token { token, batch } => {
                    batch_sum += batch;
                    token
                }
                Step::Logits(_) => continue,
                Step::Logprobs(l) => {
                    first_logprobs = l;
                    continue;
                }
                Step::End(reason) => break reason,
                Step::Failed(e) => return Err(e),
            };
            generated.push(next);
            decoded = self.decode(&generated)?;
            let (piece, stopped) = text.push(&decoded);
            if !on_text(piece) {
                break FinishReason::Cancelled;
            }
            if stopped {
                decoded.truncate(text.emitted());
                break FinishReason::Stop;
            }
        };
        let first_token_ms = first_token_ms.unwrap_or(0.0);
        let mut finish = finish;
        if finish != FinishReason::Cancelled {
            let rest = text.finish(&decoded);
            if !rest.is_empty() && !on_text(rest) {
                finish = FinishReason::Cancelled;
            }
        }
        let mut g = self.finished(decoded, prompt, &generated, finish, first_token_ms, started);
        if !generated.is_empty() {
            g.mean_batch = batch_sum as f64 / generated.len() as f64;
        }
        g.first_logprobs = first_logprobs;
        Ok(g)
    }

    fn finished(
        &self,
        text: String,
        prompt: &[u32],
        generated: &[u32],
        finish_reason: FinishReason,
        first_token_ms: f64,
        started: Instant,
    ) -> Generation {
        Generation {
            text,
            prompt_tokens: prompt.len(),
            completion_tokens: generated.len(),
            finish_reason,
            first_token_ms,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            queue_ms: 0.0,
            mean_batch: 0.0,
            first_logprobs: Vec::new(),
        }
    }
}

/// Stops a sequence in the engine when its caller is done with it.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn last_row<T>(data: &[T], seq: usize, vocab: usize) -> Result<&[T], InferenceError> {
    if seq == 0 || data.len() != seq * vocab {
        return Err(InferenceError::Model(format!(
            "logits hold {} values, expected {seq} x {vocab}",
            data.len()
        )));
    }
    Ok(&data[(seq - 1) * vocab..])
}

fn read(path: &Path) -> Result<String, InferenceError> {
    std::fs::read_to_string(path)
        .map_err(|e| InferenceError::Model(format!("{}: {e}", path.display())))
}

fn chat_template(dir: &Path) -> Result<String, InferenceError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return read(&jinja);
    }
    let config = dir.join("tokenizer_config.json");
    if config.exists() {
        let v: serde_json::Value = serde_json::from_str(&read(&config)?)
            .map_err(|e| InferenceError::Model(format!("{}: {e}", config.display())))?;
        if let Some(t) = v.get("chat_template").and_then(|t| t.as_str()) {
            return Ok(t.to_owned());
        }
    }
    Err(InferenceError::GeneratorMissing(
        jinja.display().to_string(),
    ))
}

/// The id in `sovra-model.json`, else the folder's name.
fn model_id(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("sovra-model.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        })
}

fn build_session(
    env: &ort::environment::Environment,
    model: &Path,
    options: &GeneratorOptions,
) -> Result<Session, InferenceError> {
    let mut builder = Session::builder(env)
        .map_err(rt)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(rt)?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(rt)?;
    if options.provider == ExecutionProvider::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default()
                .with_device_id(options.cuda_device)
                .build()
                .error_on_failure()])
            .map_err(|e| InferenceError::CudaUnavailable(e.to_string()))?;
    }
    builder.commit_from_file(model).map_err(rt)
}

impl Generator for OnnxGenerator {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn context_tokens(&self) -> usize {
        self.context
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn execution_provider(&self) -> ExecutionProvider {
        self.provider
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String, InferenceError> {
        self.template.render(messages)
    }

    fn count_tokens(&self, text: &str) -> Result<usize, InferenceError> {
        self.encode(text).map(|ids| ids.len())
    }

    fn token_ids(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        self.encode(text)
    }

    fn tokens_containing(&self, c: char) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .tokenizer
            .get_vocab(true)
            .into_iter()
            .filter(|(token, _)| token.contains(c))
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn truncate(&self, text: &str, max_tokens: usize) -> Result<String, InferenceError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        if enc.len() <= max_tokens {
            return Ok(text.to_owned());
        }
        let end = enc
            .get_offsets()
            .get(max_tokens)
            .map(|o| o.0)
            .unwrap_or(text.len());
        let mut end = end.min(text.len());
        while end > 0 && !text.is_char_boundary(end) {
            end -= 1;
        }
        Ok(text[..end].to_owned())
    }

    fn generate(
        &self,
        prompt: &str,
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, InferenceError> {
        let started = Instant::now();
        let ids = self.encode(prompt)?;
        if ids.is_empty() {
            return Err(InferenceError::Input("the prompt is empty".into()));
        }
        if ids.len() >= self.context_tokens() {
            return Err(InferenceError::Input(format!(
                "the prompt takes {} tokens; the model's context is {}",
                ids.len(),
                self.context_tokens()
            )));
        }
        let span = tracing::info_span!(
            "generate",
            model = %self.model_id,
            prompt_tokens = ids.len(),
            completion_tokens = tracing::field::Empty,
            finish_reason = tracing::field::Empty,
        );
        let _entered = span.enter();
        let result = self.run(&ids, params, on_text, started);
        if let Ok(g) = &result {
            span.record("completion_tokens", g.completion_tokens);
            span.record("finish_reason", g.finish_reason.as_str());
        }
        result
    }
}
