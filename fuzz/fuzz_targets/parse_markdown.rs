//! Any bytes as a Markdown upload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sovra_fuzz::{parse_checked, quiet_caught_panics};
use sovra_ingest::Format;

fuzz_target!(
    init: {
        quiet_caught_panics();
    },
    |data: &[u8]| parse_checked(data, Format::Markdown)
);
