//! Fuzz the language server's document layer: random edits applied to a document the way
//! `vmform lsp` applies a client's incremental changes, each followed by the questions its
//! features ask of the text (what is at the cursor, where the references are).
//!
//! The input is a document and its edits, split on the byte 0xFF (never part of UTF-8
//! text): the first part is the text; each further part is an edit, its first 6 bytes the
//! range's start and end and a probe position (a line and a column byte each), the rest the
//! text put in. Checked: nothing panics, and no answer is a position outside the document.
//! The same check runs as a property test in the main test suite (src/lsp/document.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/lsp/document.rs"]
mod document;

const SEPARATOR: u8 = 0xFF;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == SEPARATOR);
    let Some(text) = parts.next().and_then(|t| std::str::from_utf8(t).ok()) else { return };
    let edits: Vec<(Vec<u32>, &str)> = parts
        .filter(|p| p.len() >= 6)
        .filter_map(|p| {
            let nums = p[..6].iter().map(|b| u32::from(*b % 64)).collect();
            Some((nums, std::str::from_utf8(&p[6..]).ok()?))
        })
        .take(32)
        .collect();
    let edits: Vec<document::Edit> = edits
        .iter()
        .map(|(n, text)| document::Edit { start: (n[0], n[1]), end: (n[2], n[3]), text, probe: (n[4], n[5]) })
        .collect();
    document::check_edits(text, &edits);
});
