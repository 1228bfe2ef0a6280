//! Any bytes as a Pdf upload: parsing returns blocks or an error, never
//! panics past its own guard, never exceeds its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_ingest::{Format, Limits, parse};

fuzz_target!(
    init: {
        // Panics the parser catches itself (the PDF extractor's) are not
        // crashes; one that escapes still is (libFuzzer sees the abort).
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let limits = Limits {
            max_unpacked_bytes: 16 * 1024 * 1024,
            max_text_chars: 1024 * 1024,
        };
        if let Ok(blocks) = parse(data, Format::Pdf, limits) {
            assert!(!blocks.is_empty());
            let chars: usize = blocks.iter().map(|b| b.text.chars().count()).sum();
            assert!(chars <= limits.max_text_chars);
            assert!(blocks.iter().all(|b| !b.text.is_empty()));
        }
    }
);
