//! Any text through Markdown parsing and the chunker, with the embedding
//! model's real tokenizer (`SOVRA_TOKENIZER`, set by scripts/fuzz): every
//! chunk within the token budget, ordinals in sequence, ids unique.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sovra_ingest::{Chunker, ChunkerConfig, Format, Limits, parse};

fn chunker() -> &'static Chunker {
    static CHUNKER: OnceLock<Chunker> = OnceLock::new();
    CHUNKER.get_or_init(|| {
        let path = std::env::var("SOVRA_TOKENIZER").unwrap_or_else(|_| {
            panic!("set SOVRA_TOKENIZER to the embedding model's tokenizer.json")
        });
        Chunker::from_file(
            std::path::Path::new(&path),
            ChunkerConfig {
                max_tokens: 64,
                overlap_tokens: 8,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fuzz_target!(
    init: {
        chunker();
    },
    |data: &[u8]| {
        let limits = Limits {
            max_unpacked_bytes: 1024 * 1024,
            max_text_chars: 256 * 1024,
        };
        let Ok(blocks) = parse(data, Format::Markdown, limits) else {
            return;
        };
        let Ok(chunks) = chunker().chunk("doc", &blocks) else {
            return;
        };
        let mut ids = std::collections::HashSet::new();
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.ordinal as usize, i);
            assert!(c.tokens <= 64, "{} tokens", c.tokens);
            assert!(ids.insert(c.id.clone()), "duplicate chunk id {}", c.id);
        }
    }
);
