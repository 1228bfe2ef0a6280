//! Continuous batching over one ONNX Runtime session.
//!
//! One decoding thread owns the session and a KV cache allocated once: per
//! layer a key and a value buffer shaped `[slots, kv_heads, max_len,
//! head_size]`. Each sequence holds one slot for its whole life. Every step
//! binds the same memory as the layer's `past_key_values.*` input and its
//! `present.*` output (IO binding), so the model's `GroupQueryAttention`
//! writes the new keys and values in place (ONNX Runtime's
//! past-present share buffer) instead of allocating and copying the cache.
//!
//! The loop, one iteration at a time:
//! 1. sequences whose caller went away or stopped them leave their slot;
//! 2. waiting sequences take free slots (the lowest first, so the batch
//!    stays compact);
//! 3. sequences still reading their prompts prefill, oldest first, each in
//!    its own slot, at most `prefill_chunk` tokens in all per iteration
//!    (several short prompts, or one chunk of a long one: a long prompt
//!    does not stall the others' decoding for longer than one chunk);
//! 4. every sequence that is generating decodes one token, together, in one
//!    run over slots `0..=last`. A slot in that range that is not decoding
//!    gets a placeholder row whose key and value land just past its own
//!    filled length, where nothing reads them and its next write goes.
//!
//! `GroupQueryAttention` takes each row's length from its attention-mask
//! row (ones, then zeros): rows of different lengths decode together, and a
//! row's result does not depend on the other rows. The quantized matrix
//! products (`MatMulNBits`) do not take the same path for one row as for
//! several, though: their results differ in the last bits, and greedy
//! decoding can tip at a near-tie. With `batch_invariant` (the default) a
//! lone sequence decodes beside a placeholder row, so every sequence takes
//! the several-rows path and its output does not depend on the load; it
//! costs a lone sequence some decoding speed (`bench/generate` prints both).

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use ort::AsPointer;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::value::{DynTensor, DynValue, Tensor, TensorElementType, Value};

use super::onnx::DecoderConfig;
use super::sampling::Sampler;
use super::{FinishReason, SamplingParams};
use crate::{InferenceError, rt};

/// A sequence handed to the decoding thread.
pub(super) struct Job {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Most tokens to generate (already cut to the context budget).
    pub max_tokens: usize,
    /// Set by the caller to stop the sequence at its next step.
    pub cancel: Arc<AtomicBool>,
    pub steps: mpsc::Sender<Step>,
    /// Send each step's logits before its token (tests).
    pub trace_logits: bool,
    /// Keep going past end-of-turn tokens (tests).
    pub ignore_eos: bool,
}

/// What the decoding thread sends a sequence's caller, in order: `Token`s
/// (each after its `Logits` when traced; the first after its `Logprobs`
/// when [`SamplingParams::logprobs_of`] names tokens), then one `End` or
/// `Failed`.
pub(super) enum Step {
    Logits(Vec<f32>),
    /// The log-probabilities of `logprobs_of` at the first position.
    Logprobs(Vec<f32>),
    Token {
        token: u32,
        /// Sequences decoded together in the step that made it (1 for the
        /// first token, made by the prefill).
        batch: usize,
    },
    End(FinishReason),
    Failed(InferenceError),
}

/// The decoding thread's inbox.
pub(super) struct Engine {
    jobs: mpsc::Sender<Job>,
}

impl Engine {
    /// Starts the decoding thread; it ends when the engine is dropped and
    /// every sequence has finished.
    pub fn start(
        session: Session,
        config: DecoderConfig,
        kv_type: TensorElementType,
        position_ids: bool,
        cache: CacheShape,
    ) -> Result<Self, InferenceError> {
        let kv = KvCache::allocate(&session, &config, kv_type, &cache)?;
        let (jobs, inbox) = mpsc::channel();
        let looper = Loop {
            session,
            past: config.past_names(),
            present: config.present_names(),
            eos: config.eos_token_ids.clone(),
            vocab: config.vocab_size,
            kv,
            position_ids,
            prefill_chunk: cache.prefill_chunk.max(1),
            min_rows: if cache.batch_invariant { 2 } else { 1 },
            cpu: MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            )
            .map_err(rt)?,
            slots: (0..cache.slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            admitted: 0,
        };
        std::thread::Builder::new()
            .name("sovra-decode".into())
            .spawn(move || looper.run(inbox))
            .map_err(|e| rt(format!("cannot start the decoding thread: {e}")))?;
        Ok(Self { jobs })
    }

    pub fn submit(&self, job: Job) -> Result<(), InferenceError> {
        self.jobs
            .send(job)
            .map_err(|_| rt("the decoding thread has stopped"))
    }
}

/// The cache's size: sequence slots, tokens per slot, prefill chunk, and the
/// device its memory lives on.
#[derive(Debug, Clone)]
pub(super) struct CacheShape {
    pub slots: usize,
    pub max_len: usize,
    pub prefill_chunk: usize,
    /// `Some(device)`: CUDA memory on that device; `None`: host memory.
    pub cuda_device: Option<i32>,
    /// A lone sequence decodes with a placeholder row beside it, so that
    /// its output is the same whether it ran alone or in a batch.
    pub batch_invariant: bool,
}

/// Keys and values of every slot, allocated once.
struct KvCache {
    allocator: Allocator,
    /// `past_key_values.0.key`, `.0.value`, `.1.key`, … each flat.
    buffers: Vec<DynTensor>,
    element: TensorElementType,
    element_size: usize,
    kv_heads: usize,
    max_len: usize,
    head_size: usize,
}

impl KvCache {
    #[allow(unsafe_code)] // zeroing the new host buffer
    fn allocate(
        session: &Session,
        config: &DecoderConfig,
        element: TensorElementType,
        shape: &CacheShape,
    ) -> Result<Self, InferenceError> {
        // The one check of the cache's element type (float32 for CPU
        // models, float16 for CUDA models).
        let element_size = match element {
            TensorElementType::Float32 => 4,
            TensorElementType::Float16 => 2,
            other => {
                return Err(InferenceError::Model(format!(
                    "unsupported KV cache type {other:?}"
                )));
            }
        };
        let allocator = match shape.cuda_device {
            None => Allocator::default(),
            Some(device) => Allocator::new(
                session,
                MemoryInfo::new(
                    AllocationDevice::CUDA,
                    device,
                    AllocatorType::Device,
                    MemoryType::Default,
                )
                .map_err(rt)?,
            )
            .map_err(rt)?,
        };
        let per_slot = config.kv_heads * shape.max_len * config.head_size;
        let elements = shape.slots * per_slot;
        let mut buffers = Vec::with_capacity(config.layers * 2);
        for _ in 0..config.layers * 2 {
            let mut t = DynTensor::new(&allocator, element, [elements]).map_err(rt)?;
            if shape.cuda_device.is_none() {
                // SAFETY: host memory of `elements * element_size` bytes,
                // just allocated for this tensor.
                unsafe {
                    std::ptr::write_bytes(
                        t.data_ptr_mut().cast::<u8>(),
                        0,
                        elements * element_size,
                    );
                }
            }
            buffers.push(t);
        }
        tracing::info!(
            slots = shape.slots,
            tokens_per_slot = shape.max_len,
            bytes = buffers.len() * elements * element_size,
            "KV cache allocated"
        );
        Ok(Self {
            allocator,
            buffers,
            element,
            element_size,
            kv_heads: config.kv_heads,
            max_len: shape.max_len,
            head_size: config.head_size,
        })
    }

    /// Slots `first..first + count` of buffer `index` as one tensor
    /// `[count, kv_heads, max_len, head_size]`, over the cache's own memory.
    #[allow(unsafe_code)] // a tensor over part of the cache's own memory
    fn view(
        &mut self,
        index: usize,
        first: usize,
        count: usize,
    ) -> Result<DynValue, InferenceError> {
        let per_slot = self.kv_heads * self.max_len * self.head_size * self.element_size;
        let buffer = self
            .buffers
            .get_mut(index)
            .ok_or_else(|| rt(format!("no KV buffer {index}")))?;
        let total = buffer.shape().num_elements() * self.element_size;
        if (first + count) * per_slot > total || count == 0 {
            return Err(rt(format!(
                "KV view of slots {first}..{} is outside the cache",
                first + count
            )));
        }
        let shape = [
            count as i64,
            self.kv_heads as i64,
            self.max_len as i64,
            self.head_size as i64,
        ];
        let mut value: *mut ort::sys::OrtValue = std::ptr::null_mut();
        // SAFETY: the range lies inside the buffer (checked above); the
        // buffer outlives every view, which lives for one step only; ONNX
        // Runtime does not free data it did not allocate.
        unsafe {
            let data = buffer.data_ptr_mut().cast::<u8>().add(first * per_slot);
            let status = (ort::api().CreateTensorWithDataAsOrtValue)(
                self.allocator.memory_info().ptr(),
                data.cast(),
                count * per_slot,
                shape.as_ptr(),
                shape.len(),
                self.element.into(),
                &mut value,
            );
            check(status)?;
            let value = NonNull::new(value).ok_or_else(|| rt("no KV view was created"))?;
            Ok(Value::from_ptr(value, Some(&self.allocator)))
        }
    }
}

/// An ONNX Runtime status as a result (the status is released).
#[allow(unsafe_code)] // reading and releasing a status of the C API
fn check(status: ort::sys::OrtStatusPtr) -> Result<(), InferenceError> {
    let Some(status) = NonNull::new(status.0) else {
        return Ok(());
    };
    // SAFETY: a non-null status from the API; read, then released once.
    unsafe {
        let message = (ort::api().GetErrorMessage)(status.as_ptr());
        let text = if message.is_null() {
            "unknown error".to_owned()
        } else {
            std::ffi::CStr::from_ptr(message)
                .to_string_lossy()
                .into_owned()
        };
        (ort::api().ReleaseStatus)(status.as_ptr());
        Err(InferenceError::Runtime(text))
    }
}

/// Tokens of the next prefill chunk, given the prompt tokens still to read
/// and the iteration's budget. Batch-invariant: never a one-token chunk of a
/// longer prompt (a single row takes `MatMulNBits`' other path), so a
/// prompt is computed the same however the budget cut it.
fn chunk_len(remaining: usize, budget: usize, invariant: bool) -> usize {
    let mut n = budget.max(1).min(remaining);
    if invariant && remaining > 1 {
        if n == 1 {
            n = 2;
        }
        if remaining - n == 1 {
            n = if n > 2 { n - 1 } else { remaining };
        }
    }
    n
}

/// A sequence in a slot.
struct Seq {
    job: Job,
    sampler: Sampler,
    /// Tokens whose keys and values are in the slot.
    filled: usize,
    /// The token to feed next (decoding).
    last: u32,
    generated: Vec<u32>,
    /// When it took its slot (prefill goes oldest first).
    order: u64,
}

impl Seq {
    fn prefilling(&self) -> bool {
        self.filled < self.job.prompt.len()
    }

    /// Ends the sequence (its caller may already be gone).
    fn end(&self, reason: FinishReason) {
        let _ = self.job.steps.send(Step::End(reason));
    }

    /// Samples from `logits` (made in a step of `batch` sequences) and sends
    /// the token; false when the sequence is over (end-of-turn, length, or
    /// its caller went away).
    fn accept(&mut self, mut logits: Vec<f32>, eos: &[u32], batch: usize) -> bool {
        if self.job.trace_logits && self.job.steps.send(Step::Logits(logits.clone())).is_err() {
            return false;
        }
        if self.generated.is_empty()
            && !self.job.params.logprobs_of.is_empty()
            && self
                .job
                .steps
                .send(Step::Logprobs(log_probabilities(
                    &logits,
                    &self.job.params.logprobs_of,
                )))
                .is_err()
        {
            return false;
        }
        let next = self.sampler.sample(&mut logits, &self.generated);
        if !self.job.ignore_eos && eos.contains(&next) {
            self.end(FinishReason::Stop);
            return false;
        }
        self.generated.push(next);
        if self
            .job
            .steps
            .send(Step::Token { token: next, batch })
            .is_err()
        {
            return false;
        }
        if self.generated.len() >= self.job.max_tokens {
            self.end(FinishReason::Length);
            return false;
        }
        self.last = next;
        true
    }
}

struct Loop {
    session: Session,
    past: Vec<String>,
    present: Vec<String>,
    eos: Vec<u32>,
    vocab: usize,
    kv: KvCache,
    /// The model takes `position_ids` (else positions come from the mask).
    position_ids: bool,
    prefill_chunk: usize,
    /// Decoding runs over at least this many rows (placeholders past the
    /// last decoding slot): 2 when a lone sequence must decode exactly as
    /// in a batch.
    min_rows: usize,
    cpu: MemoryInfo<'static>,
    slots: Vec<Option<Seq>>,
    waiting: VecDeque<Job>,
    admitted: u64,
}

impl Loop {
    fn run(mut self, inbox: mpsc::Receiver<Job>) {
        loop {
            let idle = self.slots.iter().all(Option::is_none);
            if idle && self.waiting.is_empty() {
                match inbox.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return, // the generator was dropped
                }
            }
            while let Ok(job) = inbox.try_recv() {
                self.waiting.push_back(job);
            }
            self.leave_cancelled();
            self.admit();
            // Prompts are read oldest first, up to `prefill_chunk` tokens
            // per iteration: several short prompts, or one chunk of a long
            // one, between two decoding steps.
            let mut budget = self.prefill_chunk;
            while budget > 0 {
                let Some(slot) = self.next_prefill() else {
                    break;
                };
                budget = budget.saturating_sub(self.prefill(slot, budget));
            }
            if self.slots.iter().flatten().any(|s| !s.prefilling()) {
                self.decode();
            }
        }
    }

    fn leave_cancelled(&mut self) {
        for slot in self.slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|s| s.job.cancel.load(Ordering::SeqCst))
                && let Some(s) = slot.take()
            {
                s.end(FinishReason::Cancelled);
            }
        }
        self.waiting.retain(|job| {
            let cancelled = job.cancel.load(Ordering::SeqCst);
            if cancelled {
                let _ = job.steps.send(Step::End(FinishReason::Cancelled));
            }
            !cancelled
        });
    }

    fn admit(&mut self) {
        while let Some(free) = self.slots.iter().position(Option::is_none) {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            if job.max_tokens == 0 || job.prompt.is_empty() {
                let _ = job.steps.send(Step::End(FinishReason::Length));
                continue;
            }
            if job.prompt.len() + job.max_tokens > self.kv.max_len {
                let _ = job.steps.send(Step::Failed(InferenceError::Input(format!(
                    "the prompt ({} tokens) and the completion ({}) exceed the context ({})",
                    job.prompt.len(),
                    job.max_tokens,
                    self.kv.max_len
                ))));
                continue;
            }
            self.admitted += 1;
            self.slots[free] = Some(Seq {
                sampler: Sampler::new(&job.params),
                job,
                filled: 0,
                last: 0,
                generated: Vec::new(),
                order: self.admitted,
            });
        }
    }

    fn next_prefill(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.prefilling()).map(|s| (s.order, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// At most `budget` tokens of the prompt of the sequence in `slot`, in
    /// one run; the tokens read (0 when the slot is empty).
    fn prefill(&mut self, slot: usize, budget: usize) -> usize {
        let Some(seq) = self.slots[slot].as_ref() else {
            return 0;
        };
        let from = seq.filled;
        let to = from + chunk_len(seq.job.prompt.len() - from, budget, self.min_rows > 1);
        let ids = seq.job.prompt[from..to].to_vec();
        let span = tracing::debug_span!("prefill", slot, from, tokens = ids.len());
        let result = span.in_scope(|| self.forward(slot, &ids, &[to]));
        match result {
            Ok(logits) => {
                let Some(seq) = self.slots[slot].as_mut() else {
                    return to - from;
                };
                seq.filled = to;
                if !seq.prefilling() {
                    let Some(row) = logits.into_iter().next() else {
                        let _ = seq
                            .job
                            .steps
                            .send(Step::Failed(rt("the prefill returned no logits")));
                        self.slots[slot] = None;
                        return to - from;
                    };
                    if !seq.accept(row, &self.eos, 1) {
                        self.slots[slot] = None;
                    }
                }
            }
            Err(e) => {
                if let Some(seq) = self.slots[slot].take() {
                    let _ = seq.job.steps.send(Step::Failed(e));
                }
            }
        }
        to - from
    }

    /// One token for every decoding sequence, in one run.
    fn decode(&mut self) {
        let Some(last) = self
            .slots
            .iter()
            .rposition(|s| s.as_ref().is_some_and(|s| !s.prefilling()))
        else {
            return;
        };
        let rows = (last + 1).max(self.min_rows).min(self.slots.len());
        let decoding = self.slots[..rows]
            .iter()
            .flatten()
            .filter(|s| !s.prefilling())
            .count();
        let mut ids = Vec::with_capacity(rows);
        let mut lengths = Vec::with_capacity(rows);
        for slot in &self.slots[..rows] {
            match slot {
                Some(s) if !s.prefilling() => {
                    ids.push(s.last);
                    lengths.push(s.filled + 1);
                }
                // A placeholder row: its key and value land at its own
                // filled length, which its next prefill chunk overwrites.
                Some(s) => {
                    ids.push(0);
                    lengths.push(s.filled + 1);
                }
                None => {
                    ids.push(0);
                    lengths.push(1);
                }
            }
        }
        let span = tracing::trace_span!("decode_step", batch = decoding, rows);
        let result = span.in_scope(|| self.forward(0, &ids, &lengths));
        match result {
            Ok(logits) => {
                for (i, row) in logits.into_iter().enumerate() {
                    let Some(seq) = self.slots[i].as_mut() else {
                        continue;
                    };
                    if seq.prefilling() {
                        continue;
                    }
                    seq.filled += 1;
                    if !seq.accept(row, &self.eos, decoding) {
                        self.slots[i] = None;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = decoding, "decode step failed");
                for slot in self.slots[..rows].iter_mut() {
                    if slot.as_ref().is_some_and(|s| !s.prefilling())
                        && let Some(seq) = slot.take()
                    {
                        let _ = seq
                            .job
                            .steps
                            .send(Step::Failed(InferenceError::Runtime(e.to_string())));
                    }
                }
            }
        }
    }

    /// Runs the model over slots `first..first + lengths.len()`: `ids` holds
    /// the same number of new tokens for each slot, row after row;
    /// `lengths[r]` is slot `r`'s filled length after this step (its
    /// attention-mask row: that many ones, then zeros; its new tokens sit at
    /// the end of it). The last position's logits of each row.
    fn forward(
        &mut self,
        first: usize,
        ids: &[u32],
        lengths: &[usize],
    ) -> Result<Vec<Vec<f32>>, InferenceError> {
        let rows = lengths.len();
        let seq = ids.len().checked_div(rows).unwrap_or(0);
        let width = lengths.iter().copied().max().unwrap_or(0);
        if seq == 0
            || ids.len() != rows * seq
            || width > self.kv.max_len
            || lengths.iter().any(|&n| n < seq)
        {
            return Err(rt("malformed step"));
        }
        let shape = |cols: usize| vec![rows as i64, cols as i64];
        let flat_ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let mask: Vec<i64> = lengths
            .iter()
            .flat_map(|&n| (0..width).map(move |i| i64::from(i < n)))
            .collect();
        let mut binding = self.session.create_binding().map_err(rt)?;
        if self.position_ids {
            let positions: Vec<i64> = lengths
                .iter()
                .flat_map(|&n| (n - seq..n).map(|p| p as i64))
                .collect();
            binding
                .bind_input(
                    "position_ids",
                    &Tensor::from_array((shape(seq), positions)).map_err(rt)?,
                )
                .map_err(rt)?;
        }
        binding
            .bind_input(
                "input_ids",
                &Tensor::from_array((shape(seq), flat_ids)).map_err(rt)?,
            )
            .map_err(rt)?;
        binding
            .bind_input(
                "attention_mask",
                &Tensor::from_array((shape(width), mask)).map_err(rt)?,
            )
            .map_err(rt)?;
        for (i, (past, present)) in self.past.iter().zip(&self.present).enumerate() {
            let input = self.kv.view(i, first, rows)?;
            let output = self.kv.view(i, first, rows)?;
            binding.bind_input(past.as_str(), &input).map_err(rt)?;
            binding.bind_output(present.as_str(), output).map_err(rt)?;
        }
        binding
            .bind_output_to_device("logits", &self.cpu)
            .map_err(rt)?;
        let outputs = self.session.run_binding(&binding).map_err(rt)?;
        let value = &outputs["logits"];
        let vocab = self.vocab;
        let rows_of = |len: usize| -> Result<(), InferenceError> {
            if len == rows * seq * vocab {
                Ok(())
            } else {
                Err(InferenceError::Model(format!(
                    "logits hold {len} values, expected {rows} x {seq} x {vocab}"
                )))
            }
        };
        let last = |r: usize| (r * seq + seq - 1) * vocab;
        match value.dtype().tensor_type() {
            Some(TensorElementType::Float16) => {
                let (_, data) = value.try_extract_tensor::<half::f16>().map_err(rt)?;
                rows_of(data.len())?;
                Ok((0..rows)
                    .map(|r| {
                        data[last(r)..last(r) + vocab]
                            .iter()
                            .map(|x| x.to_f32())
                            .collect()
                    })
                    .collect())
            }
            _ => {
                let (_, data) = value.try_extract_tensor::<f32>().map_err(rt)?;
                rows_of(data.len())?;
                Ok((0..rows)
                    .map(|r| data[last(r)..last(r) + vocab].to_vec())
                    .collect())
            }
        }
    }
}

/// The log-probabilities of `tokens` under the softmax of `logits` (an id
/// outside the vocabulary gets negative infinity).
fn log_probabilities(logits: &[f32], tokens: &[u32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_total = total.ln() as f32 + max;
    tokens
        .iter()
        .map(|&t| {
            logits
                .get(t as usize)
                .map_or(f32::NEG_INFINITY, |&l| l - log_total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{chunk_len, log_probabilities};

    #[test]
    fn log_probabilities_are_the_softmax_in_logs() {
        let lp = log_probabilities(&[1.0, 2.0, 3.0, 1000.0], &[3, 0, 9]);
        assert!(lp[0].abs() < 1e-3, "{lp:?}");
        assert!((lp[1] + 999.0).abs() < 1e-2, "{lp:?}");
        assert_eq!(lp[2], f32::NEG_INFINITY);
        let lp = log_probabilities(&[0.0, 0.0], &[0, 1]);
        let p: f32 = lp.iter().map(|l| l.exp()).sum();
        assert!((p - 1.0).abs() < 1e-6, "{lp:?}");
    }

    #[test]
    fn an_invariant_chunk_is_never_a_single_token_of_a_longer_prompt() {
        for remaining in 1..40 {
            for budget in 1..45 {
                let mut left = remaining;
                let mut chunks = Vec::new();
                while left > 0 {
                    let n = chunk_len(left, budget, true);
                    assert!(n >= 1 && n <= left, "{remaining} {budget}: {n}");
                    chunks.push(n);
                    left -= n;
                }
                if remaining > 1 {
                    assert!(!chunks.contains(&1), "{remaining} {budget}: {chunks:?}");
                }
                assert!(chunks.iter().all(|&n| n <= budget.max(3)), "{chunks:?}");
            }
        }
        // Without invariance the budget is taken as it is.
        assert_eq!(chunk_len(10, 1, false), 1);
        assert_eq!(chunk_len(10, 9, false), 9);
        assert_eq!(chunk_len(3, 512, true), 3);
    }
}
