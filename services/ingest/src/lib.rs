//! Documents in: turn uploaded bytes into text blocks ([`parse`]) and text
//! blocks into token-bounded chunks ([`Chunker`]); untrusted files are
//! parsed in a limited child process ([`Parsing::Worker`]).

mod chunk;
mod parse;
mod worker;

pub use chunk::{Chunk, Chunker, ChunkerConfig};
pub use parse::{Block, DOCX_MIME, Format, Limits, parse};
pub use worker::{Parsing, WorkerLimits, serve_worker};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error(
        "unsupported content type `{0}` (supported: text/plain, text/markdown, text/html, application/pdf, DOCX)"
    )]
    Unsupported(String),
    #[error("the document could not be read: {0}")]
    Corrupt(String),
    #[error("the document is too large: {0}")]
    TooLarge(String),
    #[error("the document has no text")]
    Empty,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
