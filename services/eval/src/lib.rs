//! Answer evaluation on public question sets: [`sets`] reads FacQA
//! (Indonesian), RGB (Chinese), PubMedQA (English) and Sovra's own JSONL
//! into one shape; [`plan`] chooses the questions and the documents with
//! their ACL groups (some questions are asked again without their own
//! passages in reach); [`score`] judges each answer and sums a run up. The
//! `sovra eval --answers` command drives a running gateway with them;
//! [`reference`] is the plain-BM25 index its retrieval figures are compared with.

pub mod plan;
pub mod reference;
pub mod score;
pub mod sets;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Format { path: String, detail: String },
    #[error(
        "{0}: unknown question set (facqa*.csv, rgb*.json, pubmedqa*.json or Sovra's own *.jsonl)"
    )]
    UnknownSet(String),
    #[error("{0}")]
    Options(String),
}
