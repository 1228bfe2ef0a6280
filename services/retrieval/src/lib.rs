//! Retrieval: BM25 over Tantivy and nearest neighbours in the vector store,
//! run concurrently, both with the caller's tenant and ACL inside the index
//! query, fused with Reciprocal Rank Fusion (score = sum of 1 / (k + rank)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sovra_auth::Principal;
use sovra_catalog::Catalog;
use sovra_index::{LexicalIndex, SearchRequest};
use sovra_inference::Embedder;
use sovra_vectors::{VectorQuery, VectorStore};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error(transparent)]
    Index(#[from] sovra_index::IndexError),
    #[error(transparent)]
    Vectors(#[from] sovra_vectors::VectorError),
    #[error(transparent)]
    Embedding(#[from] sovra_inference::InferenceError),
    #[error(transparent)]
    Catalog(#[from] sovra_catalog::CatalogError),
    #[error("retrieval task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Lexical,
    Dense,
    #[default]
    Hybrid,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Lexical => "lexical",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// One retrieved chunk with its fused score and both component ranks (1-based).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retrieved {
    pub document_id: String,
    pub chunk_id: String,
    pub title: String,
    pub ordinal: u32,
    pub score: f32,
    pub lexical_rank: Option<usize>,
    pub dense_rank: Option<usize>,
    pub lexical_score: Option<f32>,
    pub dense_score: Option<f32>,
    /// Share of the question's terms the chunk holds (set by the answer
    /// pipeline's relevance gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question_coverage: Option<f32>,
    /// HTML with matched terms in `<mark>`; escaped text for dense-only hits.
    pub snippet: String,
    #[serde(skip)]
    pub text: String,
}

impl Retrieved {
    /// A result known only by its ids; the retrievers fill in the rest.
    fn empty(document_id: &str, chunk_id: &str) -> Self {
        Self {
            document_id: document_id.to_owned(),
            chunk_id: chunk_id.to_owned(),
            title: String::new(),
            ordinal: 0,
            score: 0.0,
            lexical_rank: None,
            dense_rank: None,
            lexical_score: None,
            dense_score: None,
            question_coverage: None,
            snippet: String::new(),
            text: String::new(),
        }
    }
}

/// Distinct document ids of ranked results, in rank order.
pub fn document_ids(results: &[Retrieved]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    results
        .iter()
        .filter(|r| seen.insert(r.document_id.as_str()))
        .map(|r| r.document_id.clone())
        .collect()
}

pub struct Retriever {
    index: Arc<LexicalIndex>,
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    catalog: Catalog,
    rrf_k: f32,
    candidates: usize,
}

impl Retriever {
    pub fn new(
        index: Arc<LexicalIndex>,
        vectors: Arc<dyn VectorStore>,
        embedder: Arc<dyn Embedder>,
        catalog: Catalog,
        rrf_k: f32,
        candidates: usize,
    ) -> Self {
        Self {
            index,
            vectors,
            embedder,
            catalog,
            rrf_k,
            candidates,
        }
    }

    async fn lexical(
        &self,
        p: &Principal,
        query: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<sovra_index::Hit>, RetrievalError> {
        let (index, p, query, metadata, k) = (
            self.index.clone(),
            p.clone(),
            query.to_owned(),
            metadata.clone(),
            self.candidates,
        );
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("retrieve_lexical").entered();
            let mut req = SearchRequest::new(&p, &query, k);
            req.metadata = metadata;
            index.search(&req)
        })
        .await
        .map_err(|e| RetrievalError::Task(e.to_string()))?
        .map_err(Into::into)
    }

    async fn dense(
        &self,
        p: &Principal,
        query: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<sovra_vectors::VectorHit>, RetrievalError> {
        let embedder = self.embedder.clone();
        let text = query.to_owned();
        let vector = tokio::task::spawn_blocking(move || embedder.embed(&[text.as_str()]))
            .instrument(tracing::info_span!("embed_query"))
            .await
            .map_err(|e| RetrievalError::Task(e.to_string()))??
            .pop()
            .map(|e| e.vector)
            .unwrap_or_default();
        let mut q = VectorQuery::new(p, vector, self.candidates);
        q.metadata = metadata.clone();
        Ok(self
            .vectors
            .search(&q)
            .instrument(tracing::info_span!("retrieve_dense"))
            .await?)
    }

    /// Retrieves the `top_k` best chunks the principal may see.
    pub async fn retrieve(
        &self,
        p: &Principal,
        query: &str,
        mode: Mode,
        top_k: usize,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<Retrieved>, RetrievalError> {
        let (lexical, dense) = match mode {
            Mode::Lexical => (self.lexical(p, query, metadata).await?, Vec::new()),
            Mode::Dense => (Vec::new(), self.dense(p, query, metadata).await?),
            Mode::Hybrid => {
                let (l, d) = tokio::join!(
                    self.lexical(p, query, metadata),
                    self.dense(p, query, metadata)
                );
                (l?, d?)
            }
        };
        let mut fused: HashMap<String, Retrieved> = HashMap::new();
        for (rank, h) in lexical.into_iter().enumerate() {
            let r = fused
                .entry(h.chunk_id.clone())
                .or_insert_with(|| Retrieved {
                    title: h.title.clone(),
                    ordinal: h.ordinal,
                    snippet: h.snippet.clone(),
                    text: h.text.clone(),
                    ..Retrieved::empty(&h.document_id, &h.chunk_id)
                });
            r.lexical_rank = Some(rank + 1);
            r.lexical_score = Some(h.score);
            r.score += 1.0 / (self.rrf_k + (rank + 1) as f32);
        }
        for (rank, h) in dense.into_iter().enumerate() {
            let r = fused
                .entry(h.chunk_id.clone())
                .or_insert_with(|| Retrieved::empty(&h.document_id, &h.chunk_id));
            r.dense_rank = Some(rank + 1);
            r.dense_score = Some(h.score);
            r.score += 1.0 / (self.rrf_k + (rank + 1) as f32);
        }
        let mut ranked: Vec<Retrieved> = fused.into_values().collect();
        ranked.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.chunk_id.cmp(&b.chunk_id))
        });
        // Every candidate is checked against the catalog (the source of
        // truth) in one query before it leaves: an index can lag behind it
        // (another replica wrote, or a crash came between the two), so a
        // chunk the catalog no longer has, or whose document's ACL no longer
        // admits the caller, is dropped, and the text and title served are
        // the catalog's. Candidates are checked in ranked order until
        // `top_k` survive.
        let mut kept = Vec::with_capacity(top_k);
        for window in ranked.chunks(top_k.max(1) * 2) {
            let ids: Vec<String> = window.iter().map(|r| r.chunk_id.clone()).collect();
            let current = self
                .catalog
                .chunk_texts(&p.tenant, &ids)
                .instrument(tracing::info_span!("retrieve_recheck"))
                .await?;
            for r in window {
                let Some(c) = current.get(&r.chunk_id) else {
                    tracing::debug!(chunk = %r.chunk_id, "stale hit dropped: the catalog no longer has the chunk");
                    continue;
                };
                if c.document_id != r.document_id || !p.may_see(&p.tenant, &c.acl) {
                    tracing::debug!(chunk = %r.chunk_id, "stale hit dropped: the document's ACL no longer admits the caller");
                    continue;
                }
                let mut r = r.clone();
                r.title = c.title.clone();
                r.ordinal = u32::try_from(c.ordinal).unwrap_or(0);
                if r.text != c.text || r.snippet.is_empty() {
                    r.snippet = sovra_index::plain_snippet(&c.text);
                }
                r.text = c.text.clone();
                kept.push(r);
                if kept.len() == top_k {
                    return Ok(kept);
                }
            }
        }
        Ok(kept)
    }
}
