//! Retrieval: BM25 over Tantivy and nearest neighbours in the vector store,
//! run concurrently, both with the caller's tenant and ACL inside the index
//! query, fused with Reciprocal Rank Fusion (score = sum of 1 / (k + rank)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sovra_auth::{AccessScope, Principal};
use sovra_catalog::Catalog;
use sovra_index::{LexicalIndex, SearchRequest};
use sovra_inference::{Embedder, TextKind};
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
    Task(#[source] tokio::task::JoinError),
    #[error("the embedder returned no vector for the query")]
    NoQueryVector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Reciprocal Rank Fusion of ranked lists of ids: each id scores the sum,
/// over the lists it appears in, of `1 / (k + rank)` (rank 1-based); the
/// result is best first, ties broken by id so the order is deterministic.
/// An id repeated within one list counts at its first rank only.
pub fn rrf(lists: &[&[&str]], k: f32) -> Vec<(String, f32)> {
    let weighted: Vec<(&[&str], f32)> = lists.iter().map(|l| (*l, 1.0)).collect();
    weighted_rrf(&weighted, k)
}

/// [`rrf`] with a weight per list: an id scores the sum of
/// `weight / (k + rank)` over the lists it appears in.
pub fn weighted_rrf(lists: &[(&[&str], f32)], k: f32) -> Vec<(String, f32)> {
    let mut scores: HashMap<&str, f32> = HashMap::new();
    for (list, weight) in lists {
        let mut seen = std::collections::HashSet::new();
        for (i, id) in list.iter().enumerate() {
            if seen.insert(*id) {
                *scores.entry(id).or_insert(0.0) += weight / (k + (i + 1) as f32);
            }
        }
    }
    best_first(scores)
}

/// Scored ids, best first, ties broken by id so the order is deterministic.
fn best_first(scores: HashMap<&str, f32>) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = scores
        .into_iter()
        .map(|(id, s)| (id.to_owned(), s))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// A convex combination of the two legs' scores, each min-max normalised
/// over its own candidates (the best scores 1, the worst 0): an id scores
/// `lexical_weight · lexical + (1 − lexical_weight) · dense`, a leg that did
/// not find it adding 0. Best first, ties broken by id.
pub fn convex(
    lexical: &[(&str, f32)],
    dense: &[(&str, f32)],
    lexical_weight: f32,
) -> Vec<(String, f32)> {
    let mut scores: HashMap<&str, f32> = HashMap::new();
    for (list, weight) in [(lexical, lexical_weight), (dense, 1.0 - lexical_weight)] {
        let (lo, hi) = list
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, s)| {
                (lo.min(*s), hi.max(*s))
            });
        let mut seen = std::collections::HashSet::new();
        for (id, s) in list {
            if seen.insert(*id) {
                let norm = if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
                *scores.entry(id).or_insert(0.0) += weight * norm;
            }
        }
    }
    best_first(scores)
}

/// How hybrid search fuses its two legs: weighted Reciprocal Rank Fusion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// The RRF constant: larger flattens the difference between top ranks.
    pub k: f32,
    pub lexical_weight: f32,
    pub dense_weight: f32,
}

impl Fusion {
    /// One fused order of chunk ids, best first.
    pub fn fuse(&self, lexical: &[&str], dense: &[&str]) -> Vec<(String, f32)> {
        weighted_rrf(
            &[(lexical, self.lexical_weight), (dense, self.dense_weight)],
            self.k,
        )
    }
}

/// One retrieved chunk with its fused score and both component ranks (1-based).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// HTML: the best passage of the chunk's text with the query's terms in
    /// `<mark>`, the rest escaped (its first 240 characters when it holds
    /// none of them, as a dense-only hit may not).
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
    distinct(results.iter().map(|r| r.document_id.as_str()))
}

/// Ids in first-seen order, each once.
pub fn distinct<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(*id))
        .map(str::to_owned)
        .collect()
}

pub struct Retriever {
    index: Arc<LexicalIndex>,
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    catalog: Catalog,
    fusion: Fusion,
    candidates: usize,
}

impl Retriever {
    pub fn new(
        index: Arc<LexicalIndex>,
        vectors: Arc<dyn VectorStore>,
        embedder: Arc<dyn Embedder>,
        catalog: Catalog,
        fusion: Fusion,
        candidates: usize,
    ) -> Self {
        Self {
            index,
            vectors,
            embedder,
            catalog,
            fusion,
            candidates,
        }
    }

    async fn lexical(
        &self,
        scope: &AccessScope,
        query: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<sovra_index::Candidate>, RetrievalError> {
        let (index, scope, query, metadata, k) = (
            self.index.clone(),
            scope.clone(),
            query.to_owned(),
            metadata.clone(),
            self.candidates,
        );
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("retrieve_lexical").entered();
            let mut req = SearchRequest::new(scope, &query, k);
            req.metadata = metadata;
            index.candidates(&req)
        })
        .await
        .map_err(RetrievalError::Task)?
        .map_err(Into::into)
    }

    async fn dense(
        &self,
        scope: &AccessScope,
        query: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<sovra_vectors::VectorHit>, RetrievalError> {
        let embedder = self.embedder.clone();
        let text = query.to_owned();
        let vector =
            tokio::task::spawn_blocking(move || embedder.embed(&[text.as_str()], TextKind::Query))
                .instrument(tracing::info_span!("embed_query"))
                .await
                .map_err(RetrievalError::Task)??
                .pop()
                .map(|e| e.vector)
                .ok_or(RetrievalError::NoQueryVector)?;
        let mut q = VectorQuery::new(scope.clone(), vector, self.candidates);
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
        // The access rule, built once; both indexes and the re-check below
        // apply this one value.
        let scope = p.scope();
        let (lexical, dense) = match mode {
            Mode::Lexical => (self.lexical(&scope, query, metadata).await?, Vec::new()),
            Mode::Dense => (Vec::new(), self.dense(&scope, query, metadata).await?),
            Mode::Hybrid => {
                let (l, d) = tokio::join!(
                    self.lexical(&scope, query, metadata),
                    self.dense(&scope, query, metadata)
                );
                (l?, d?)
            }
        };
        // Each leg's hits by chunk id, then one fused order over both.
        let lexical_order: Vec<&str> = lexical.iter().map(|h| h.chunk_id.as_str()).collect();
        let dense_order: Vec<&str> = dense.iter().map(|h| h.chunk_id.as_str()).collect();
        let order = self.fusion.fuse(&lexical_order, &dense_order);
        let lexical_hits: HashMap<&str, (usize, &sovra_index::Candidate)> = lexical
            .iter()
            .enumerate()
            .map(|(i, h)| (h.chunk_id.as_str(), (i + 1, h)))
            .collect();
        let dense_hits: HashMap<&str, (usize, &sovra_vectors::VectorHit)> = dense
            .iter()
            .enumerate()
            .map(|(i, h)| (h.chunk_id.as_str(), (i + 1, h)))
            .collect();
        let ranked: Vec<Retrieved> = order
            .into_iter()
            .filter_map(|(chunk_id, score)| {
                let lex = lexical_hits.get(chunk_id.as_str());
                let den = dense_hits.get(chunk_id.as_str());
                let document_id = match (lex, den) {
                    (Some((_, h)), _) => &h.document_id,
                    (None, Some((_, h))) => &h.document_id,
                    (None, None) => return None,
                };
                let mut r = Retrieved::empty(document_id, &chunk_id);
                r.score = score;
                r.lexical_rank = lex.map(|(rank, _)| *rank);
                r.lexical_score = lex.map(|(_, h)| h.score);
                r.dense_rank = den.map(|(rank, _)| *rank);
                r.dense_score = den.map(|(_, h)| h.score);
                Some(r)
            })
            .collect();
        // Every candidate is checked against the catalog (the source of
        // truth) in one query before it leaves: an index can lag behind it
        // (another replica wrote, or a crash came between the two), so a
        // chunk the catalog no longer has, or whose document's ACL no longer
        // admits the caller, is dropped, and the text and title served are
        // the catalog's. Candidates are checked in ranked order until
        // `top_k` survive.
        let mut kept = Vec::with_capacity(top_k);
        'windows: for window in ranked.chunks(top_k.max(1) * 2) {
            let ids: Vec<String> = window.iter().map(|r| r.chunk_id.clone()).collect();
            let current = self
                .catalog
                .chunk_texts(scope.tenant(), &ids)
                .instrument(tracing::info_span!("retrieve_recheck"))
                .await?;
            for r in window {
                let Some(c) = current.get(&r.chunk_id) else {
                    tracing::debug!(chunk = %r.chunk_id, "stale hit dropped: the catalog no longer has the chunk");
                    continue;
                };
                if c.document_id != r.document_id || !scope.admits(scope.tenant(), &c.acl) {
                    tracing::debug!(chunk = %r.chunk_id, "stale hit dropped: the document's ACL no longer admits the caller");
                    continue;
                }
                let mut r = r.clone();
                r.title = c.title.clone();
                r.ordinal = u32::try_from(c.ordinal).unwrap_or(0);
                r.text = c.text.clone();
                kept.push(r);
                if kept.len() == top_k {
                    break 'windows;
                }
            }
        }
        // Snippets only for what is served, from the catalog's text, with
        // the query's terms marked whichever leg found the chunk.
        self.highlight(query, kept).await
    }

    async fn highlight(
        &self,
        query: &str,
        mut kept: Vec<Retrieved>,
    ) -> Result<Vec<Retrieved>, RetrievalError> {
        if kept.is_empty() {
            return Ok(kept);
        }
        let (index, query) = (self.index.clone(), query.to_owned());
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("retrieve_snippets").entered();
            let highlighter = index.highlighter(&query)?;
            for r in &mut kept {
                r.snippet = highlighter.snippet(&r.text);
            }
            Ok(kept)
        })
        .await
        .map_err(RetrievalError::Task)?
    }
}

#[cfg(test)]
mod tests {
    use super::{Fusion, convex, distinct, rrf};

    fn ids(fused: &[(String, f32)]) -> Vec<&str> {
        fused.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn distinct_keeps_the_first_place_of_each_id() {
        assert_eq!(distinct(["b", "a", "b", "c", "a"]), ["b", "a", "c"]);
        assert!(distinct([]).is_empty());
    }

    #[test]
    fn rrf_scores_are_sums_of_reciprocal_ranks() {
        let fused = rrf(&[&["a", "b", "c"], &["c", "a"]], 60.0);
        let score = |id: &str| fused.iter().find(|(i, _)| i == id).map(|(_, s)| *s);
        assert_eq!(score("a"), Some(1.0 / 61.0 + 1.0 / 62.0));
        assert_eq!(score("b"), Some(1.0 / 62.0));
        assert_eq!(score("c"), Some(1.0 / 63.0 + 1.0 / 61.0));
        // Found by both legs beats found by one at the same rank.
        assert_eq!(ids(&fused), vec!["a", "c", "b"]);
    }

    #[test]
    fn rrf_one_leg_keeps_its_order_and_ties_break_by_id() {
        assert_eq!(
            ids(&rrf(&[&["z", "y", "x"], &[]], 60.0)),
            vec!["z", "y", "x"]
        );
        assert_eq!(ids(&rrf(&[&["b"], &["a"]], 60.0)), vec!["a", "b"]);
        assert!(rrf(&[&[], &[]], 60.0).is_empty());
    }

    #[test]
    fn rrf_k_sets_how_much_the_top_ranks_dominate() {
        // With a small k a first place outweighs two middling ones.
        let lists: [&[&str]; 2] = [&["a", "x", "y", "b"], &["c", "q", "b"]];
        assert_eq!(ids(&rrf(&lists, 1.0))[0], "a");
        // With a large k, being found twice matters more than rank.
        assert_eq!(ids(&rrf(&lists, 1000.0))[0], "b");
    }

    #[test]
    fn weights_tip_the_fusion_toward_one_leg() {
        let (lexical, dense) = (["a", "b"], ["b", "a"]);
        let even = Fusion {
            k: 10.0,
            lexical_weight: 1.0,
            dense_weight: 1.0,
        };
        // Equal weights: a tie, broken by id.
        assert_eq!(ids(&even.fuse(&lexical, &dense)), vec!["a", "b"]);
        let dense_heavy = Fusion {
            dense_weight: 1.5,
            ..even
        };
        assert_eq!(ids(&dense_heavy.fuse(&lexical, &dense)), vec!["b", "a"]);
        let fused = dense_heavy.fuse(&lexical, &dense);
        assert!((fused[0].1 - (1.0 / 12.0 + 1.5 / 11.0)).abs() < 1e-6);
        // A leg of weight 0 adds nothing but its ids.
        let lexical_only = Fusion {
            dense_weight: 0.0,
            ..even
        };
        assert_eq!(ids(&lexical_only.fuse(&lexical, &dense)), vec!["a", "b"]);
    }

    #[test]
    fn convex_combines_min_max_normalised_scores() {
        let lexical = [("a", 12.0), ("b", 7.0), ("c", 2.0)];
        let dense = [("c", 0.9), ("b", 0.8), ("d", 0.5)];
        // Lexical only: its order; dense-only ids add 0.
        assert_eq!(ids(&convex(&lexical, &dense, 1.0))[..3], ["a", "b", "c"]);
        // Dense only.
        assert_eq!(ids(&convex(&lexical, &dense, 0.0))[..2], ["c", "b"]);
        // Even: b is second in both (0.5 + 0.75), a and c lead one leg each.
        let fused = convex(&lexical, &dense, 0.5);
        let score = |id: &str| fused.iter().find(|(i, _)| i == id).map(|(_, s)| *s);
        assert!((score("b").unwrap() - 0.5 * (0.5 + 0.75)).abs() < 1e-6);
        assert!((score("a").unwrap() - 0.5).abs() < 1e-6);
        assert!((score("d").unwrap() - 0.0).abs() < 1e-6);
        // One candidate in a leg: it scores 1 there.
        assert_eq!(convex(&[("x", 3.0)], &[], 0.5), vec![("x".to_owned(), 0.5)]);
        assert!(convex(&[], &[], 0.5).is_empty());
    }

    #[test]
    fn rrf_counts_a_repeated_id_once_per_list() {
        let fused = rrf(&[&["a", "a", "b"]], 60.0);
        assert_eq!(fused[0], ("a".to_owned(), 1.0 / 61.0));
        assert_eq!(fused[1], ("b".to_owned(), 1.0 / 63.0));
    }
}
