//! The plain-BM25 reference the lexical leg is measured against: a Tantivy
//! index in memory of whole documents (title and text in one field each),
//! Tantivy's default tokenizer, lower-casing and the English stemmer
//! (`en_stem`), BM25 with Tantivy's defaults, and a question's terms OR-ed
//! over both fields. No chunking, no language-specific analysis, no
//! boosts: what a team would get from Tantivy out of the box.

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, TantivyDocument, Term, doc};

use crate::EvalError;

const ANALYZER: &str = "en_stem";

pub struct PlainBm25 {
    reader: IndexReader,
    analyzer: TextAnalyzer,
    id: Field,
    fields: [Field; 2],
}

fn err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Options(format!("the BM25 reference index: {e}"))
}

impl PlainBm25 {
    /// Indexes `(id, title, text)` documents.
    pub fn build<'a>(
        docs: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Self, EvalError> {
        let mut schema = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let id = schema.add_text_field("id", STRING | STORED);
        let title = schema.add_text_field("title", text.clone());
        let body = schema.add_text_field("body", text);
        let index = Index::create_in_ram(schema.build());
        let mut writer = index.writer(50_000_000).map_err(err)?;
        for (i, t, b) in docs {
            writer
                .add_document(doc!(id => i, title => t, body => b))
                .map_err(err)?;
        }
        writer.commit().map_err(err)?;
        let analyzer = index
            .tokenizers()
            .get(ANALYZER)
            .ok_or_else(|| err("no en_stem analyzer"))?;
        Ok(Self {
            reader: index.reader().map_err(err)?,
            analyzer,
            id,
            fields: [title, body],
        })
    }

    /// The ids of the `k` best documents for `question`, best first.
    pub fn search(&self, question: &str, k: usize) -> Result<Vec<String>, EvalError> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(question);
        let mut terms: Vec<String> = Vec::new();
        while stream.advance() {
            let t = stream.token().text.clone();
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .flat_map(|t| {
                self.fields.iter().map(move |f| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(*f, t),
                        IndexRecordOption::WithFreqs,
                    ));
                    (Occur::Should, q)
                })
            })
            .collect();
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(
                &BooleanQuery::new(clauses),
                &TopDocs::with_limit(k).order_by_score(),
            )
            .map_err(err)?;
        top.into_iter()
            .map(|(_, addr)| {
                let d: TantivyDocument = searcher.doc(addr).map_err(err)?;
                Ok(d.get_first(self.id)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_ranks_by_bm25() {
        let bm25 = PlainBm25::build([
            ("a", "Running policy", "Staff who run the treasury desk."),
            ("b", "Leave", "Annual leave is twenty days."),
            ("c", "Runs", "A run, runs and running: running everywhere."),
        ])
        .unwrap();
        let hits = bm25.search("how many days of annual leave?", 3).unwrap();
        assert_eq!(hits.first().map(String::as_str), Some("b"));
        // "runs" stems to "run": both running documents, the denser first.
        let hits = bm25.search("runs", 3).unwrap();
        assert_eq!(hits, vec!["c", "a"]);
        assert!(bm25.search("", 3).unwrap().is_empty());
    }
}
