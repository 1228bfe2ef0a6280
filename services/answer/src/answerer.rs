//! The answer pipeline, owned in one place: ask → retrieve (with the
//! caller's ACL) → relevance gate → prompt → generate → cite.
//!
//! [`Answerer::prepare`] does everything up to the model: retrieval, the
//! gate and the prompt, and returns a [`Prepared`] answer whose facts (what
//! was retrieved, which chunks became sources, the prompt's size) the caller
//! may record before it spends anything on generation. [`Prepared::start`]
//! admits the generation and returns an [`AnswerStream`] of
//! [`AnswerEvent`]s: `Sources`, then `Text` pieces, then `Done` with the
//! settled answer, its citations and usage (or `Failed`). An answer with no
//! relevant source goes through the same stream: the refusal as its one
//! `Text`, `Done` without a generation. HTTP routes only adapt this stream
//! (Sovra's events, OpenAI's chunks, or a collected body); nothing here
//! knows about HTTP or the audit trail.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use sovra_auth::Principal;
use sovra_inference::{
    ChatMessage, FinishReason, Generation, GenerationEvent, GenerationHandle, GenerationQueue,
    InferenceError, SamplingParams,
};
use sovra_retrieval::{Mode, Retrieved, Retriever};
use tracing::Instrument;

use crate::{
    AnswerError, Budget, Citation, Gate, Language, Prompt, RetrievalRequest, Source, Verdicts,
    language,
};

/// The pipeline's fixed parts: where it retrieves, the model queue, the
/// gate and the budget.
pub struct Answerer {
    retriever: Arc<Retriever>,
    generation: Arc<GenerationQueue>,
    gate: Gate,
    /// Prompt plus completion, at most the model's own context.
    context_tokens: usize,
    /// Most tokens of one source in the prompt.
    max_source_tokens: usize,
    /// Added to the sampling of an answer from sources: no `[n]` markers.
    marker_bans: Vec<(u32, f32)>,
    checks: Checks,
    /// The check's verdict tokens in the model's vocabulary.
    verdicts: Arc<Verdicts>,
}

/// What a finished answer from sources must pass before it is returned;
/// one that fails is returned as the refusal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checks {
    /// Not one of its sentences is attributable to a source: the model
    /// answered from what it knows, not from the documents.
    pub refuse_unsupported: bool,
    /// The model, asked whether the passages the answer cites state it
    /// ([`crate::VERIFY_RULE`]), does not say yes: the log-odds of a yes
    /// over a no as its reply's first token ([`crate::verdict_margin`]) do
    /// not exceed `verify_min_margin`.
    pub verify: bool,
    /// The bar of [`Checks::verify`] (0: yes more likely than no).
    pub verify_min_margin: f32,
}

impl Checks {
    /// No checks (a conversation without retrieval).
    const NONE: Checks = Checks {
        refuse_unsupported: false,
        verify: false,
        verify_min_margin: 0.0,
    };
}

/// What is asked.
#[derive(Debug, Clone)]
pub enum Ask {
    /// A question answered from the caller's documents.
    Documents(Question),
    /// A conversation answered by the model alone (chat with retrieval
    /// off): the messages as given, defused.
    Conversation(Vec<ChatMessage>),
}

/// A question to answer from the documents.
#[derive(Debug, Clone)]
pub struct Question {
    pub text: String,
    pub mode: Mode,
    /// Chunks retrieved.
    pub top_k: usize,
    /// Exact-match metadata filter.
    pub metadata: BTreeMap<String, String>,
    /// The application's own system text (chat), kept after Sovra's rules.
    pub app_system: Option<String>,
    /// Earlier turns of the conversation (chat).
    pub history: Vec<ChatMessage>,
}

/// What retrieval found for a question, as a response reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RetrievalReport {
    pub mode: Mode,
    /// Chunks retrieved.
    pub retrieved: usize,
    /// Of those, the ones the relevance gate let through.
    pub relevant: usize,
    /// Sources in the prompt.
    pub used: usize,
    /// Relevant chunks left out to fit the context budget.
    pub dropped: usize,
    pub results: Vec<Retrieved>,
}

/// An answer ready to generate: its retrieval, its prompt, its sampling.
pub struct Prepared {
    generation: Arc<GenerationQueue>,
    /// The asking principal's tenant: the queue's fair share is per tenant.
    tenant: String,
    /// `None` for a conversation without retrieval.
    question: Option<String>,
    language: Language,
    retrieval: Option<Arc<RetrievalReport>>,
    /// `None` when no retrieved chunk was relevant: the answer is the
    /// refusal, without the model.
    prompt: Option<Prompt>,
    sampling: SamplingParams,
    checks: Checks,
    verdicts: Arc<Verdicts>,
}

impl Prepared {
    /// What retrieval found (`None` for a conversation without retrieval).
    pub fn retrieval(&self) -> Option<&Arc<RetrievalReport>> {
        self.retrieval.as_ref()
    }

    /// The prompt the model will read (`None`: no source was relevant).
    pub fn prompt(&self) -> Option<&Prompt> {
        self.prompt.as_ref()
    }

    /// Whether the model runs (false: the answer is the refusal).
    pub fn uses_model(&self) -> bool {
        self.prompt.is_some()
    }

    /// The model's id.
    pub fn model_id(&self) -> &str {
        self.generation.generator().model_id()
    }

    /// Admits the generation (or refuses at once when the queue is full,
    /// [`AnswerError::Busy`]) and returns the answer's events.
    pub fn start(self) -> Result<AnswerStream, AnswerError> {
        let (text, sources): (Option<String>, Arc<[Source]>) = match self.prompt {
            Some(p) => (Some(p.text), p.sources.into()),
            None => (None, Arc::from([])),
        };
        let mut pending = VecDeque::new();
        pending.push_back(AnswerEvent::Sources(Arc::clone(&sources)));
        let Some(text) = text else {
            let refusal = self.language.refusal().to_owned();
            pending.push_back(AnswerEvent::Text(refusal.clone()));
            pending.push_back(AnswerEvent::Done(Finished {
                text: refusal,
                citations: Vec::new(),
                refused: true,
                generation: None,
                confirmed: None,
                check_margin: None,
            }));
            return Ok(AnswerStream {
                pending,
                handle: None,
                question: self.question,
                sources,
                checks: self.checks,
                verdicts: self.verdicts,
                generation: self.generation,
                tenant: self.tenant,
            });
        };
        let handle = self
            .generation
            .submit(&self.tenant, text, self.sampling)
            .map_err(|full| AnswerError::Busy {
                waiting: full.waiting,
            })?;
        Ok(AnswerStream {
            pending,
            handle: Some(handle),
            question: self.question,
            sources,
            checks: self.checks,
            verdicts: self.verdicts,
            generation: self.generation,
            tenant: self.tenant,
        })
    }
}

/// What an answer sends, in order: `Sources` once, `Text` pieces, then
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum AnswerEvent {
    /// The sources the answer is generated from (empty without retrieval or
    /// when none was relevant).
    Sources(Arc<[Source]>),
    /// A new piece of the answer's text.
    Text(String),
    Done(Finished),
    /// The model failed; nothing more follows.
    Failed(InferenceError),
}

/// A finished answer.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The answer as returned: a refusal in the model's own words becomes
    /// the one refusal sentence in the question's language.
    pub text: String,
    /// The sources the answer's sentences are attributed to.
    pub citations: Vec<Citation>,
    /// The answer says the documents do not hold it.
    pub refused: bool,
    /// The model's run; `None` when no source was relevant and the model
    /// was not asked.
    pub generation: Option<Generation>,
    /// The answer's check ([`Checks::verify`]): `Some(true)` the model
    /// confirmed that the cited passages state the answer, `Some(false)` it
    /// did not and the answer was returned as the refusal; `None` not
    /// checked (checks off, a refusal, nothing cited, no retrieval).
    pub confirmed: Option<bool>,
    /// The check's margin ([`crate::verdict_margin`]), when it was read
    /// from the model's probabilities.
    pub check_margin: Option<f32>,
}

/// Token counts of an answer (OpenAI's `usage`; zeros when the model did
/// not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Finished {
    /// The check's margin as the response and the audit record report it:
    /// a finite number (JSON has no infinity; a certain no is reported as
    /// `confirmed: false` alone).
    pub fn reported_check_margin(&self) -> Option<f32> {
        self.check_margin.filter(|m| m.is_finite())
    }

    pub fn usage(&self) -> Usage {
        let (p, c) = self
            .generation
            .as_ref()
            .map(|g| (g.prompt_tokens, g.completion_tokens))
            .unwrap_or((0, 0));
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
        }
    }

    /// Why the answer ended (`stop` when the model was not asked).
    pub fn finish_reason(&self) -> FinishReason {
        self.generation
            .as_ref()
            .map_or(FinishReason::Stop, |g| g.finish_reason)
    }
}

/// The events of one answer. Dropping it (or [`AnswerStream::cancel`])
/// stops the generation at its next step.
pub struct AnswerStream {
    pending: VecDeque<AnswerEvent>,
    handle: Option<GenerationHandle>,
    /// The question the sources answer (`None` without retrieval).
    question: Option<String>,
    sources: Arc<[Source]>,
    checks: Checks,
    verdicts: Arc<Verdicts>,
    /// Where the answer's check runs, as a follow-up of the answer.
    generation: Arc<GenerationQueue>,
    tenant: String,
}

impl AnswerStream {
    /// The sources the answer is generated from (as its `Sources` event).
    pub fn sources(&self) -> &Arc<[Source]> {
        &self.sources
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<AnswerEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        let handle = self.handle.as_mut()?;
        loop {
            let event = match handle.recv().await {
                None => AnswerEvent::Failed(InferenceError::Runtime(
                    "the generation ended without a result".into(),
                )),
                Some(GenerationEvent::Started) => continue,
                Some(GenerationEvent::Text(text)) => return Some(AnswerEvent::Text(text)),
                Some(GenerationEvent::Done(g)) => {
                    self.handle = None;
                    let settled = self.settle(g);
                    return Some(match self.check(settled).await {
                        Ok(finished) => AnswerEvent::Done(finished),
                        Err(e) => AnswerEvent::Failed(e),
                    });
                }
                Some(GenerationEvent::Failed(e)) => AnswerEvent::Failed(e),
            };
            self.handle = None;
            return Some(event);
        }
    }

    /// The check of a settled answer ([`Checks::verify`]): the model is
    /// asked whether the passages the answer cites state it; unless it says
    /// yes, the answer is returned as the refusal. Refusals, answers
    /// without citations and conversations are not checked.
    async fn check(&self, finished: Finished) -> Result<Finished, InferenceError> {
        let Some(question) = &self.question else {
            return Ok(finished);
        };
        if !self.checks.verify || finished.refused || finished.citations.is_empty() {
            return Ok(finished);
        }
        let span = tracing::info_span!(
            "verify",
            confirmed = tracing::field::Empty,
            margin = tracing::field::Empty,
        );
        let generator = self.generation.generator();
        let prompt = crate::verification_prompt(
            generator.as_ref(),
            &finished.citations,
            question,
            &finished.text,
        )
        .map_err(|e| InferenceError::Runtime(e.to_string()))?;
        let params = SamplingParams {
            max_tokens: 1,
            logprobs_of: self.verdicts.tokens(),
            ..SamplingParams::default()
        };
        let mut handle = self
            .generation
            .submit_follow_up(&self.tenant, prompt, params)
            .map_err(|e| InferenceError::Runtime(e.to_string()))?;
        let reply = async {
            loop {
                match handle.recv().await {
                    Some(GenerationEvent::Done(g)) => return Ok(g),
                    Some(GenerationEvent::Failed(e)) => return Err(e),
                    Some(GenerationEvent::Started | GenerationEvent::Text(_)) => {}
                    None => {
                        return Err(InferenceError::Runtime(
                            "the answer's check ended without a result".into(),
                        ));
                    }
                }
            }
        }
        .instrument(span.clone())
        .await?;
        // The margin where the vocabulary has both verdicts; otherwise the
        // reply's words.
        let margin = self.verdicts.margin(&reply.first_logprobs);
        let confirmed = match margin {
            Some(m) => m > self.checks.verify_min_margin,
            None => crate::confirms(&reply.text),
        };
        span.record("confirmed", confirmed);
        if let Some(m) = margin {
            span.record("margin", m);
        }
        if confirmed {
            return Ok(Finished {
                confirmed: Some(true),
                check_margin: margin,
                ..finished
            });
        }
        Ok(Finished {
            text: language::detect(question).refusal().to_owned(),
            citations: Vec::new(),
            refused: true,
            generation: finished.generation,
            confirmed: Some(false),
            check_margin: margin,
        })
    }

    /// Stops the generation at its next step; `Done` (finish reason
    /// `cancelled`, the text so far) still follows.
    pub fn cancel(&self) {
        if let Some(h) = &self.handle {
            h.cancel();
        }
    }

    /// Waits for the whole answer (not streamed).
    pub async fn collect(mut self) -> Result<Finished, AnswerError> {
        while let Some(event) = self.next().await {
            match event {
                AnswerEvent::Sources(_) | AnswerEvent::Text(_) => {}
                AnswerEvent::Done(f) => return Ok(f),
                AnswerEvent::Failed(e) => return Err(AnswerError::Model(e)),
            }
        }
        Err(AnswerError::Model(InferenceError::Runtime(
            "the answer ended without a result".into(),
        )))
    }

    /// The finished answer: from sources, settled and cited; without
    /// retrieval, the model's text as it is.
    fn settle(&self, generation: Generation) -> Finished {
        let Some(question) = &self.question else {
            return Finished {
                text: generation.text.clone(),
                citations: Vec::new(),
                refused: false,
                generation: Some(generation),
                confirmed: None,
                check_margin: None,
            };
        };
        let settled = crate::settle(
            &generation.text,
            question,
            &self.sources,
            self.checks.refuse_unsupported,
        );
        Finished {
            text: settled.text,
            citations: settled.citations,
            refused: settled.refused,
            generation: Some(generation),
            confirmed: None,
            check_margin: None,
        }
    }
}

impl Answerer {
    pub fn new(
        retriever: Arc<Retriever>,
        generation: Arc<GenerationQueue>,
        gate: Gate,
        context_tokens: usize,
        max_source_tokens: usize,
        checks: Checks,
    ) -> Self {
        let marker_bans = crate::marker_bans(generation.generator().as_ref());
        let verdicts = Arc::new(Verdicts::of(generation.generator().as_ref()));
        let context_tokens = context_tokens.min(generation.generator().context_tokens());
        Self {
            retriever,
            generation,
            gate,
            context_tokens,
            max_source_tokens,
            marker_bans,
            checks,
            verdicts,
        }
    }

    /// The model queue (its generator's id, vocabulary, context).
    pub fn generation(&self) -> &Arc<GenerationQueue> {
        &self.generation
    }

    /// Prompt plus completion: the configured budget, at most the model's.
    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// Everything up to the model: retrieval with the principal's ACL, the
    /// relevance gate and the prompt within the context budget.
    pub async fn prepare(
        &self,
        principal: &Principal,
        ask: Ask,
        mut sampling: SamplingParams,
    ) -> Result<Prepared, AnswerError> {
        let budget = Budget {
            context_tokens: self.context_tokens,
            max_tokens: sampling.max_tokens,
            max_source_tokens: self.max_source_tokens,
        };
        let generator = self.generation.generator().clone();
        let q = match ask {
            Ask::Conversation(messages) => {
                let messages: Vec<ChatMessage> = messages
                    .into_iter()
                    .map(|m| ChatMessage::new(&m.role, crate::defuse(&m.content)))
                    .collect();
                let prompt =
                    blocking(move || crate::plain_prompt(generator.as_ref(), &messages, budget))
                        .instrument(tracing::info_span!("build_prompt"))
                        .await?;
                return Ok(Prepared {
                    generation: self.generation.clone(),
                    tenant: principal.tenant.clone(),
                    question: None,
                    language: Language::English,
                    retrieval: None,
                    prompt: Some(prompt),
                    sampling,
                    checks: Checks::NONE,
                    verdicts: self.verdicts.clone(),
                });
            }
            Ask::Documents(q) => q,
        };
        let language = language::detect(&q.text);
        let req = RetrievalRequest {
            question: &q.text,
            mode: q.mode,
            top_k: q.top_k,
            metadata: &q.metadata,
            gate: &self.gate,
        };
        let (hits, relevant) = crate::retrieve(&self.retriever, principal, &req).await?;
        let relevant_count = relevant.len();
        let prompt = if relevant.is_empty() {
            None
        } else {
            let question = q.text.clone();
            let (app_system, history) = (q.app_system, q.history);
            let prompt = blocking(move || {
                crate::build_prompt(
                    generator.as_ref(),
                    &question,
                    app_system.as_deref(),
                    &history,
                    &relevant,
                    budget,
                )
            })
            .instrument(tracing::info_span!("build_prompt"))
            .await?;
            // An answer from sources is generated without source markers
            // (their tokens are banned; citations are attributed afterwards).
            sampling.logit_bias.extend_from_slice(&self.marker_bans);
            Some(prompt)
        };
        let retrieval = RetrievalReport {
            mode: q.mode,
            retrieved: hits.len(),
            relevant: relevant_count,
            used: prompt.as_ref().map_or(0, |p| p.sources.len()),
            dropped: prompt.as_ref().map_or(0, |p| p.dropped),
            results: hits,
        };
        Ok(Prepared {
            generation: self.generation.clone(),
            tenant: principal.tenant.clone(),
            question: Some(q.text),
            language,
            retrieval: Some(Arc::new(retrieval)),
            prompt,
            sampling,
            checks: self.checks,
            verdicts: self.verdicts.clone(),
        })
    }
}

/// Runs tokenizer work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnswerError> + Send + 'static,
) -> Result<T, AnswerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AnswerError::Task)?
}
