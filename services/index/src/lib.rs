//! The lexical index: Tantivy with BM25, one Tantivy document per chunk.
//!
//! Analysis serves the users' languages: `body` is segmented by jieba (so a
//! Chinese query finds Chinese passages; Latin-script words, Indonesian
//! included, come out as plain lower-cased words) and `body_en` is English
//! with stemming. Tenant, ACL groups and ACL users are indexed terms, and
//! [`SearchRequest`] cannot be built without a [`Principal`]: every query
//! carries the caller's tenant and ACL as required clauses inside Tantivy.

mod analysis;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use sovra_auth::{AccessScope, Acl, fields};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use analysis::{EN, MULTI, register};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("lexical index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("lexical index directory {path}: {message}")]
    Directory { path: String, message: String },
    #[error("lexical index: the writer lock is poisoned")]
    Poisoned,
}

/// One chunk, as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkEntry {
    pub document_id: String,
    pub chunk_id: String,
    pub ordinal: u32,
    pub tenant: String,
    pub title: String,
    pub text: String,
    pub acl: Acl,
    /// Flat string metadata, matched exactly by search filters.
    pub metadata: BTreeMap<String, String>,
    /// The catalog version of the document.
    pub version: i64,
}

/// What the index holds of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocState {
    pub chunks: usize,
    /// The catalog version its chunks carry; `None` when they disagree.
    pub version: Option<i64>,
}

/// A search, always within an access scope (a principal's, built once).
pub struct SearchRequest<'a> {
    scope: AccessScope,
    pub text: &'a str,
    pub top_k: usize,
    pub metadata: BTreeMap<String, String>,
}

impl<'a> SearchRequest<'a> {
    pub fn new(scope: impl Into<AccessScope>, text: &'a str, top_k: usize) -> Self {
        Self {
            scope: scope.into(),
            text,
            top_k,
            metadata: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub document_id: String,
    pub chunk_id: String,
    pub ordinal: u32,
    pub title: String,
    pub score: f32,
    /// HTML: the best passage, matched terms in `<mark>`, the rest escaped.
    pub snippet: String,
    pub text: String,
}

/// A lexical candidate: which chunk, and its BM25 score.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub document_id: String,
    pub chunk_id: String,
    pub score: f32,
}

/// The term a document's chunks share: tenant and id, joined by a byte
/// neither may contain.
fn doc_key(tenant: &str, id: &str) -> String {
    format!("{tenant}\u{0}{id}")
}

#[derive(Clone, Copy)]
struct Fields {
    document_id: Field,
    /// `tenant` and `document_id` as one term: what a replace or delete
    /// removes (ids are unique within a tenant only).
    doc_key: Field,
    chunk_id: Field,
    ordinal: Field,
    version: Field,
    tenant: Field,
    acl_group: Field,
    acl_user: Field,
    title: Field,
    body: Field,
    body_en: Field,
    body_cjk: Field,
    meta: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let multi = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(MULTI)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let english = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(EN)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let cjk = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("whitespace")
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let meta = JsonObjectOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_tokenizer("raw"))
        .set_stored();
    let fields = Fields {
        // Fast as well as stored: search candidates are read from the
        // fast fields (columns), not the document store.
        document_id: b.add_text_field("document_id", STRING | STORED | FAST),
        doc_key: b.add_text_field("doc_key", STRING),
        chunk_id: b.add_text_field("chunk_id", STRING | STORED | FAST),
        ordinal: b.add_u64_field("ordinal", INDEXED | STORED),
        version: b.add_i64_field("version", STORED),
        tenant: b.add_text_field(fields::TENANT, STRING | STORED),
        acl_group: b.add_text_field(fields::ACL_GROUPS, STRING),
        acl_user: b.add_text_field(fields::ACL_USERS, STRING),
        title: b.add_text_field("title", multi.clone()),
        body: b.add_text_field("body", multi),
        body_en: b.add_text_field("body_en", english),
        body_cjk: b.add_text_field("body_cjk", cjk),
        meta: b.add_json_field("meta", meta),
    };
    (b.build(), fields)
}

pub struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
}

const WRITER_HEAP: usize = 64 * 1024 * 1024;

impl LexicalIndex {
    /// Opens the index in `dir`, creating it when absent.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::Directory {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let (schema, _) = schema();
        let directory =
            tantivy::directory::MmapDirectory::open(dir).map_err(|e| IndexError::Directory {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        let index = match Index::open_or_create(directory, schema.clone()) {
            Ok(index) => index,
            // The index is derived data: one made under an older schema is
            // emptied and rebuilt from the catalog by reconciliation.
            Err(tantivy::TantivyError::SchemaError(e)) => {
                tracing::warn!(path = %dir.display(), error = %e, "the lexical index has an older schema: emptied; reconciliation rebuilds it from the catalog");
                std::fs::remove_dir_all(dir)
                    .and_then(|()| std::fs::create_dir_all(dir))
                    .map_err(|e| IndexError::Directory {
                        path: dir.display().to_string(),
                        message: e.to_string(),
                    })?;
                let directory = tantivy::directory::MmapDirectory::open(dir).map_err(|e| {
                    IndexError::Directory {
                        path: dir.display().to_string(),
                        message: e.to_string(),
                    }
                })?;
                Index::open_or_create(directory, schema)?
            }
            Err(e) => return Err(e.into()),
        };
        Self::with_index(index)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_ram() -> Result<Self, IndexError> {
        Self::with_index(Index::create_in_ram(schema().0))
    }

    fn with_index(index: Index) -> Result<Self, IndexError> {
        register(&index);
        let (_, fields) = schema();
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
        })
    }

    fn to_doc(&self, c: &ChunkEntry) -> TantivyDocument {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.document_id, &c.document_id);
        doc.add_text(f.doc_key, doc_key(&c.tenant, &c.document_id));
        doc.add_text(f.chunk_id, &c.chunk_id);
        doc.add_u64(f.ordinal, u64::from(c.ordinal));
        doc.add_i64(f.version, c.version);
        doc.add_text(f.tenant, &c.tenant);
        for g in &c.acl.groups {
            doc.add_text(f.acl_group, g);
        }
        for u in &c.acl.users {
            doc.add_text(f.acl_user, u);
        }
        doc.add_text(f.title, &c.title);
        doc.add_text(f.body, &c.text);
        doc.add_text(f.body_en, &c.text);
        doc.add_text(
            f.body_cjk,
            analysis::cjk_bigrams(&format!("{}\n{}", c.title, c.text)),
        );
        let meta: serde_json::Map<String, serde_json::Value> = c
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        doc.add_object(
            f.meta,
            meta.into_iter().map(|(k, v)| (k, v.into())).collect(),
        );
        doc
    }

    /// Replaces every chunk of each listed (tenant, document) at once: old
    /// chunks go and new ones appear in the same commit. Searchable on return.
    pub fn replace_documents(
        &self,
        docs: &[(&str, &str, &[ChunkEntry])],
    ) -> Result<(), IndexError> {
        let mut w = self.writer.lock().map_err(|_| IndexError::Poisoned)?;
        for (tenant, id, chunks) in docs {
            w.delete_term(Term::from_field_text(
                self.fields.doc_key,
                &doc_key(tenant, id),
            ));
            for c in *chunks {
                w.add_document(self.to_doc(c))?;
            }
        }
        match w.commit() {
            Ok(_) => {}
            Err(e) => {
                let _ = w.rollback();
                return Err(e.into());
            }
        }
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    pub fn replace_document(
        &self,
        tenant: &str,
        document_id: &str,
        chunks: &[ChunkEntry],
    ) -> Result<(), IndexError> {
        self.replace_documents(&[(tenant, document_id, chunks)])
    }

    /// Removes every chunk of a document. Gone from search on return.
    pub fn delete_document(&self, tenant: &str, document_id: &str) -> Result<(), IndexError> {
        self.replace_documents(&[(tenant, document_id, &[])])
    }

    /// Per (tenant, document id) present: how many chunks, and the catalog
    /// version they carry (reconciliation compares both with the catalog).
    pub fn document_counts(&self) -> Result<BTreeMap<(String, String), DocState>, IndexError> {
        let searcher = self.reader.searcher();
        let mut out: BTreeMap<(String, String), DocState> = BTreeMap::new();
        for segment in searcher.segment_readers() {
            let store = segment
                .get_store_reader(1)
                .map_err(|e| IndexError::Tantivy(e.into()))?;
            for doc_id in segment.doc_ids_alive() {
                let doc: TantivyDocument = store.get(doc_id)?;
                let text = |field| {
                    doc.get_first(field)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                };
                let version = doc.get_first(self.fields.version).and_then(|v| v.as_i64());
                if let (Some(tenant), Some(id)) =
                    (text(self.fields.tenant), text(self.fields.document_id))
                {
                    let state = out
                        .entry((tenant, id))
                        .or_insert(DocState { chunks: 0, version });
                    if state.chunks > 0 && state.version != version {
                        state.version = None;
                    }
                    state.chunks += 1;
                }
            }
        }
        Ok(out)
    }

    pub fn num_chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The access scope as a query: tenant AND (a group OR the user).
    fn acl_query(&self, scope: &AccessScope) -> Box<dyn Query> {
        let f = self.fields;
        let mut who: Vec<(Occur, Box<dyn Query>)> = scope
            .groups()
            .iter()
            .map(|g| -> (Occur, Box<dyn Query>) {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.acl_group, g),
                        IndexRecordOption::Basic,
                    )),
                )
            })
            .collect();
        who.push((
            Occur::Should,
            Box::new(TermQuery::new(
                Term::from_field_text(f.acl_user, scope.subject()),
                IndexRecordOption::Basic,
            )),
        ));
        Box::new(BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.tenant, scope.tenant()),
                    IndexRecordOption::Basic,
                )),
            ),
            (Occur::Must, Box::new(BooleanQuery::new(who))),
        ]))
    }

    /// The user's words as BM25 terms, OR-ed across the analyzed fields:
    /// jieba words (title boosted, body), English stems, CJK bigrams.
    fn text_query(&self, text: &str) -> Box<dyn Query> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut add = |field: Field, tokens: Vec<String>, boost: f32| {
            for t in tokens {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(field, &t),
                    IndexRecordOption::WithFreqs,
                ));
                let q: Box<dyn Query> = if (boost - 1.0).abs() > f32::EPSILON {
                    Box::new(tantivy::query::BoostQuery::new(q, boost))
                } else {
                    q
                };
                clauses.push((Occur::Should, q));
            }
        };
        let multi = analysis::tokens(&self.index, MULTI, text);
        add(f.title, multi.clone(), 1.5);
        add(f.body, multi, 1.0);
        add(f.body_en, analysis::tokens(&self.index, EN, text), 1.0);
        add(
            f.body_cjk,
            analysis::cjk_bigrams(text)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            1.0,
        );
        Box::new(BooleanQuery::new(clauses))
    }

    /// A highlighter of `text`'s terms: the query's body terms weighted as
    /// tantivy's own `SnippetGenerator::create` weighs them (by the index's
    /// document frequencies), with the forward-only analysis of
    /// [`analysis::snippet_analyzer`].
    pub fn highlighter(&self, text: &str) -> Result<Highlighter, IndexError> {
        self.highlighter_with(&self.reader.searcher(), &*self.text_query(text))
    }

    fn highlighter_with(
        &self,
        searcher: &tantivy::Searcher,
        query: &dyn Query,
    ) -> Result<Highlighter, IndexError> {
        let body = self.fields.body;
        let mut terms: Vec<Term> = Vec::new();
        query.query_terms(&mut |term, _| {
            if term.field() == body && !terms.contains(term) {
                terms.push(term.clone());
            }
        });
        let mut weighted = std::collections::BTreeMap::new();
        for term in terms {
            let Some(text) = term.value().as_str().map(str::to_owned) else {
                continue;
            };
            let doc_freq = searcher.doc_freq(&term)?;
            if doc_freq > 0 {
                weighted.insert(text, 1.0 / (1.0 + doc_freq as f32));
            }
        }
        Ok(Highlighter {
            generator: SnippetGenerator::new(weighted, analysis::snippet_analyzer(), body, 240),
        })
    }

    /// The whole query: the text's terms, the access scope and the metadata
    /// filter, all inside Tantivy.
    fn query(&self, req: &SearchRequest<'_>) -> (Box<dyn Query>, BooleanQuery) {
        let f = self.fields;
        let text_query = self.text_query(req.text);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, text_query.box_clone()),
            (Occur::Must, self.acl_query(&req.scope)),
        ];
        for (k, v) in &req.metadata {
            let mut term = Term::from_field_json_path(f.meta, k, false);
            term.append_type_and_str(v);
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        (text_query, BooleanQuery::new(clauses))
    }

    /// The best `top_k` (1 to 1,000) matches of a query, best first.
    fn top(
        searcher: &tantivy::Searcher,
        query: &BooleanQuery,
        top_k: usize,
    ) -> Result<Vec<(f32, tantivy::DocAddress)>, IndexError> {
        Ok(searcher.search(
            query,
            &TopDocs::with_limit(top_k.clamp(1, 1000)).order_by_score(),
        )?)
    }

    /// BM25 search for candidates: the best `top_k` chunks the principal may
    /// see, by id and score only. Nothing else is read: the ids come from
    /// fast fields, not the document store, and no snippet is made (the
    /// retriever takes text and title from the catalog and highlights only
    /// what it serves).
    pub fn candidates(&self, req: &SearchRequest<'_>) -> Result<Vec<Candidate>, IndexError> {
        let (_, query) = self.query(req);
        let searcher = self.reader.searcher();
        let top = Self::top(&searcher, &query, req.top_k)?;
        let mut columns = BTreeMap::new();
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let (documents, chunks) = match columns.entry(addr.segment_ord) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let fast = searcher.segment_reader(addr.segment_ord).fast_fields();
                    let column = |name: &str| -> Result<tantivy::columnar::StrColumn, IndexError> {
                        fast.str(name)?.ok_or_else(|| {
                            IndexError::Tantivy(tantivy::TantivyError::SchemaError(format!(
                                "{name} is not a fast field"
                            )))
                        })
                    };
                    e.insert((column("document_id")?, column("chunk_id")?))
                }
            };
            let value =
                |column: &tantivy::columnar::StrColumn| -> Result<Option<String>, IndexError> {
                    let Some(ord) = column.term_ords(addr.doc_id).next() else {
                        return Ok(None);
                    };
                    let mut s = String::new();
                    column
                        .ord_to_str(ord, &mut s)
                        .map_err(|e| IndexError::Tantivy(e.into()))?;
                    Ok(Some(s))
                };
            let (Some(document_id), Some(chunk_id)) = (value(documents)?, value(chunks)?) else {
                tracing::warn!(
                    doc = addr.doc_id,
                    "a lexical hit without ids in its fast fields was skipped"
                );
                continue;
            };
            out.push(Candidate {
                document_id,
                chunk_id,
                score,
            });
        }
        Ok(out)
    }

    /// BM25 search with each hit's stored text and a highlighted snippet;
    /// only chunks the principal may see can match.
    pub fn search(&self, req: &SearchRequest<'_>) -> Result<Vec<Hit>, IndexError> {
        let f = self.fields;
        let (text_query, query) = self.query(req);
        let searcher = self.reader.searcher();
        let top = Self::top(&searcher, &query, req.top_k)?;
        let highlighter = self.highlighter_with(&searcher, &*text_query)?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let text_of = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let text = text_of(f.body);
            hits.push(Hit {
                document_id: text_of(f.document_id),
                chunk_id: text_of(f.chunk_id),
                ordinal: doc
                    .get_first(f.ordinal)
                    .and_then(|v| v.as_u64())
                    .and_then(|o| u32::try_from(o).ok())
                    .unwrap_or(0),
                title: text_of(f.title),
                score,
                snippet: highlighter.snippet(&text),
                text,
            });
        }
        Ok(hits)
    }
}

/// Marks a query's terms in any text: the best passage of up to 240
/// characters, matched terms in `<mark>`, the rest HTML-escaped.
pub struct Highlighter {
    generator: SnippetGenerator,
}

impl Highlighter {
    /// The snippet of `text`; a text holding none of the terms gets its
    /// first 240 characters. A snippet that cannot be made never fails the
    /// search: the generator has panicked on offsets before (fixed at the
    /// cause, see analysis::snippet_analyzer); should it again, the text
    /// gets a plain excerpt, and the first such case is logged.
    pub fn snippet(&self, text: &str) -> String {
        let highlighted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut snippet = self.generator.snippet(text);
            snippet.set_snippet_prefix_postfix("<mark>", "</mark>");
            snippet.to_html()
        }));
        match highlighted {
            Ok(html) if !html.is_empty() => html,
            Ok(_) => plain_snippet(text),
            Err(_) => {
                static LOGGED: std::sync::Once = std::sync::Once::new();
                LOGGED.call_once(|| {
                    tracing::error!("the snippet generator failed on a text; plain excerpts are served instead (logged once)");
                });
                plain_snippet(text)
            }
        }
    }
}

/// The snippet of a chunk with no highlighted terms: its first 240
/// characters, HTML-escaped (the same form as highlighted snippets).
pub fn plain_snippet(text: &str) -> String {
    escape(&text.chars().take(240).collect::<String>())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests;
