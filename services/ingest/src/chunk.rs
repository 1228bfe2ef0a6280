//! Token-bounded chunking with overlap, preferring heading and paragraph
//! boundaries. Tokens are counted with the embedding model's own tokenizer,
//! so a chunk always fits the embedder's window.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::{Block, IngestError};

#[derive(Debug, Clone, Copy)]
pub struct ChunkerConfig {
    /// Most tokens in one chunk (the embedder reads at most 256).
    pub max_tokens: usize,
    /// Tokens repeated from the end of one chunk at the start of the next.
    pub overlap_tokens: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

/// One chunk of a document. `id` is stable: document id, ordinal and a
/// hash of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub id: String,
    pub ordinal: u32,
    pub text: String,
    pub tokens: usize,
}

pub struct Chunker {
    tokenizer: Tokenizer,
    config: ChunkerConfig,
}

/// A piece no larger than a chunk: a paragraph, a sentence, or a window.
struct Piece {
    text: String,
    tokens: usize,
    heading: bool,
}

impl Chunker {
    /// Loads `tokenizer.json` (run `scripts/setup-models` to fetch it).
    pub fn from_file(path: &Path, config: ChunkerConfig) -> Result<Self, IngestError> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
            IngestError::Tokenizer(format!(
                "{}: {e} (run scripts/setup-models to fetch it)",
                path.display()
            ))
        })?;
        // The shipped tokenizer pads and truncates to 128; counting needs neither.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| IngestError::Tokenizer(e.to_string()))?;
        Ok(Self { tokenizer, config })
    }

    pub fn config(&self) -> ChunkerConfig {
        self.config
    }

    fn count(&self, text: &str) -> Result<usize, IngestError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.len())
            .map_err(|e| IngestError::Tokenizer(e.to_string()))
    }

    /// Splits text that is too long into sentences, then into token windows.
    fn pieces(&self, block: &Block, out: &mut Vec<Piece>) -> Result<(), IngestError> {
        let tokens = self.count(&block.text)?;
        if tokens <= self.config.max_tokens {
            out.push(Piece {
                text: block.text.clone(),
                tokens,
                heading: block.heading,
            });
            return Ok(());
        }
        let sentences = split_sentences(&block.text);
        if sentences.len() > 1 {
            for s in sentences {
                self.pieces(
                    &Block {
                        text: s,
                        heading: false,
                    },
                    out,
                )?;
            }
            return Ok(());
        }
        // One sentence longer than a chunk: windows of tokens by their offsets.
        let enc = self
            .tokenizer
            .encode(block.text.as_str(), false)
            .map_err(|e| IngestError::Tokenizer(e.to_string()))?;
        let offsets = enc.get_offsets();
        let step = self.config.max_tokens.max(1);
        let mut start = 0;
        while start < offsets.len() {
            let end = (start + step).min(offsets.len());
            let from = offsets[start].0;
            let to = offsets[end - 1].1;
            if let Some(text) = block.text.get(from..to) {
                out.push(Piece {
                    text: text.to_owned(),
                    tokens: end - start,
                    heading: false,
                });
            }
            start = end;
        }
        Ok(())
    }

    /// Chunks a document's blocks.
    pub fn chunk(&self, document_id: &str, blocks: &[Block]) -> Result<Vec<Chunk>, IngestError> {
        let mut pieces = Vec::new();
        for b in blocks {
            self.pieces(b, &mut pieces)?;
        }
        let max = self.config.max_tokens;
        let mut chunks: Vec<Vec<usize>> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_tokens = 0;
        let mut fresh = 0; // pieces in `current` not carried over as overlap
        for (i, p) in pieces.iter().enumerate() {
            let boundary = p.heading && current_tokens >= max / 4;
            if !current.is_empty() && fresh > 0 && (current_tokens + p.tokens > max || boundary) {
                chunks.push(current.clone());
                // Carry trailing pieces as overlap, unless a heading starts anew.
                let mut carried = Vec::new();
                let mut carried_tokens = 0;
                if !p.heading {
                    for &j in current.iter().rev() {
                        let t = pieces[j].tokens;
                        if carried_tokens + t > self.config.overlap_tokens
                            || carried_tokens + t + p.tokens > max
                        {
                            break;
                        }
                        carried.insert(0, j);
                        carried_tokens += t;
                    }
                }
                current = carried;
                current_tokens = carried_tokens;
                fresh = 0;
            }
            current.push(i);
            current_tokens += p.tokens;
            fresh += 1;
        }
        if fresh > 0 {
            chunks.push(current);
        }
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(ordinal, idx)| {
                let text = idx
                    .iter()
                    .map(|&j| pieces[j].text.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n");
                let tokens = idx.iter().map(|&j| pieces[j].tokens).sum();
                let ordinal = u32::try_from(ordinal).unwrap_or(u32::MAX);
                Chunk {
                    id: chunk_id(document_id, ordinal, &text),
                    ordinal,
                    text,
                    tokens,
                }
            })
            .collect())
    }
}

/// `{document}:{ordinal}:{first 12 hex of sha256(text)}`.
pub fn chunk_id(document_id: &str, ordinal: u32, text: &str) -> String {
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    format!("{document_id}:{ordinal}:{}", &hash[..12])
}

fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        let end = matches!(c, '。' | '！' | '？' | '；')
            || (matches!(c, '.' | '!' | '?' | ';')
                && chars.peek().is_none_or(|n| n.is_whitespace()))
            || c == '\n';
        if end && !current.trim().is_empty() {
            out.push(current.trim().to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunker(max: usize, overlap: usize) -> Option<Chunker> {
        let dir = std::env::var("SOVRA_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/sovra/models")
            });
        let path = dir.join("all-minilm-l6-v2/tokenizer.json");
        Some(
            Chunker::from_file(
                &path,
                ChunkerConfig {
                    max_tokens: max,
                    overlap_tokens: overlap,
                },
            )
            .unwrap(),
        )
    }

    #[test]
    fn chunks_fit_overlap_and_have_stable_ids() {
        let Some(c) = chunker(30, 16) else { return };
        let blocks: Vec<Block> = (0..20)
            .map(|i| Block {
                text: format!(
                    "Paragraph {i} says that staff may take annual leave of twenty days."
                ),
                heading: i % 7 == 0,
            })
            .collect();
        let chunks = c.chunk("doc-1", &blocks).unwrap();
        assert!(chunks.len() > 3);
        for ch in &chunks {
            assert!(ch.tokens <= 30, "{} tokens", ch.tokens);
            assert!(ch.id.starts_with(&format!("doc-1:{}:", ch.ordinal)));
        }
        // Overlap: a paragraph ending one chunk starts the next (unless a heading intervenes).
        let shared = chunks.windows(2).filter(|w| {
            let last = w[0].text.rsplit("\n\n").next().unwrap_or_default();
            w[1].text.starts_with(last)
        });
        assert!(shared.count() > 0);
        assert_eq!(chunks, c.chunk("doc-1", &blocks).unwrap(), "deterministic");
    }

    #[test]
    fn a_huge_single_line_is_windowed() {
        let Some(c) = chunker(50, 10) else { return };
        let line = "word ".repeat(5000);
        let chunks = c
            .chunk(
                "d",
                &[Block {
                    text: line,
                    heading: false,
                }],
            )
            .unwrap();
        assert!(chunks.len() >= 100);
        assert!(chunks.iter().all(|ch| ch.tokens <= 50));
    }

    #[test]
    fn chinese_sentences_split() {
        let s = split_sentences("银行规定。员工必须遵守！Is it ok? Yes.");
        assert_eq!(s, vec!["银行规定。", "员工必须遵守！", "Is it ok?", "Yes."]);
    }
}
