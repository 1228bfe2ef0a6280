//! What every parser target checks: any bytes as a document of `format`
//! give blocks or an error, never a panic past the parser's own guard,
//! never more than the limits allow.

use sovra_ingest::{Format, Limits, parse};

/// Makes panics that the parser catches itself (the PDF extractor's)
/// silent; one that escapes is still a crash (libFuzzer sees the abort).
pub fn quiet_caught_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

pub fn parse_checked(data: &[u8], format: Format) {
    let limits = Limits {
        max_unpacked_bytes: 16 * 1024 * 1024,
        max_text_chars: 1024 * 1024,
    };
    if let Ok(blocks) = parse(data, format, limits) {
        assert!(!blocks.is_empty());
        let chars: usize = blocks.iter().map(|b| b.text.chars().count()).sum();
        assert!(chars <= limits.max_text_chars);
        assert!(blocks.iter().all(|b| !b.text.is_empty()));
    }
}
