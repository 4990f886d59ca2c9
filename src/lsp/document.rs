//! Open documents and the mapping between byte offsets and LSP positions (lines, and
//! columns in UTF-16 code units, as LSP 3.17 counts them by default).
//!
//! Invariant: every position the server sends maps to a place inside the document, and
//! every position a client sends is clamped into it, so no edit can make it panic.

use lsp_types::{Position, Range, TextDocumentContentChangeEvent};

/// Where each line starts, in bytes. LSP ends a line at `\n`, `\r\n` or a lone `\r`.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        let bytes = text.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            match b {
                b'\n' => starts.push(i + 1),
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => starts.push(i + 1),
                _ => {}
            }
        }
        LineIndex { starts }
    }

    /// The byte range of line `line`'s text, without its line ending.
    fn line(&self, text: &str, line: usize) -> (usize, usize) {
        let start = self.starts[line].min(text.len());
        let mut end = self.starts.get(line + 1).copied().unwrap_or(text.len()).min(text.len());
        let bytes = text.as_bytes();
        if end > start && bytes[end - 1] == b'\n' {
            end -= 1;
        }
        if end > start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        (start, end)
    }

    /// The position of a byte offset; an offset past the end, inside a character or inside
    /// a line ending is moved back to the nearest place in the text.
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|s| *s <= offset).saturating_sub(1);
        let (start, end) = self.line(text, line);
        let mut at = offset.min(end);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let col: usize = text[start..at].chars().map(char::len_utf16).sum();
        Position::new(line as u32, col as u32)
    }

    /// The byte offset of a position; a line past the end is the end of the text, a
    /// column past the line's end is the line's end, and a column inside a surrogate pair
    /// is the character's start.
    pub fn offset(&self, text: &str, pos: Position) -> usize {
        let Some(_) = self.starts.get(pos.line as usize) else { return text.len() };
        let (start, end) = self.line(text, pos.line as usize);
        let mut units = 0;
        for (i, c) in text[start..end].char_indices() {
            units += c.len_utf16();
            if units > pos.character as usize {
                return start + i;
            }
        }
        end
    }

    pub fn range(&self, text: &str, span: std::ops::Range<usize>) -> Range {
        Range::new(self.position(text, span.start), self.position(text, span.end.max(span.start)))
    }
}

/// A document the client has open: its text (which wins over the file on disk).
#[derive(Debug, Clone)]
pub struct Document {
    pub text: String,
    pub version: i32,
    pub lines: LineIndex,
}

impl Document {
    pub fn new(text: String, version: i32) -> Self {
        let lines = LineIndex::new(&text);
        Document { text, version, lines }
    }

    /// Apply one change: a whole new text, or a range replaced (incremental sync).
    pub fn apply(&mut self, change: TextDocumentContentChangeEvent) {
        match change.range {
            None => self.text = change.text,
            Some(range) => {
                let start = self.lines.offset(&self.text, range.start);
                let end = self.lines.offset(&self.text, range.end).max(start);
                self.text.replace_range(start..end, &change.text);
            }
        }
        self.lines = LineIndex::new(&self.text);
    }

    pub fn offset(&self, pos: Position) -> usize {
        self.lines.offset(&self.text, pos)
    }

    /// The range of the whole text.
    pub fn full_range(&self) -> Range {
        self.lines.range(&self.text, 0..self.text.len())
    }
}

/// One edit of a document as a client might send it, for the fuzz target
/// (`fuzz/fuzz_targets/lsp_edits.rs`) and the property test: a range (in any order, inside
/// or outside the text) replaced by `text`.
#[allow(dead_code)] // Used by the tests and by fuzz/, which includes this file.
pub struct Edit<'a> {
    pub start: (u32, u32),
    pub end: (u32, u32),
    pub text: &'a str,
    /// Where to ask what is at the cursor after the edit.
    pub probe: (u32, u32),
}

/// Apply each edit, then read the document at its probe as the server's features do
/// (what is at the cursor, the references of the text) and map every answer to a
/// position. Panics when an answer lies outside the document (or anything else panics).
#[allow(dead_code)]
pub fn check_edits(text: &str, edits: &[Edit]) {
    use vmform_compiler::ide;
    let mut doc = Document::new(text.to_string(), 1);
    for e in edits {
        let range = Range::new(Position::new(e.start.0, e.start.1), Position::new(e.end.0, e.end.1));
        doc.apply(TextDocumentContentChangeEvent { range: Some(range), range_length: None, text: e.text.to_string() });
        assert_eq!(doc.lines.starts, LineIndex::new(&doc.text).starts, "the line index follows the text");
        let inside = |p: Position| {
            let line = p.line as usize;
            assert!(line < doc.lines.starts.len(), "{p:?} is past the last line of {:?}", doc.text);
            let (start, end) = doc.lines.line(&doc.text, line);
            let units: usize = doc.text[start..end].chars().map(char::len_utf16).sum();
            assert!(p.character as usize <= units, "{p:?} is past the end of its line in {:?}", doc.text);
        };
        let check_range = |r: std::ops::Range<usize>| {
            assert!(r.start <= r.end && r.end <= doc.text.len(), "{r:?} is outside {:?}", doc.text);
            let range = doc.lines.range(&doc.text, r);
            inside(range.start);
            inside(range.end);
        };
        let offset = doc.offset(Position::new(e.probe.0, e.probe.1));
        assert!(offset <= doc.text.len() && doc.text.is_char_boundary(offset));
        inside(doc.lines.position(&doc.text, offset));
        let cursor = ide::at(&doc.text, offset);
        if let Some(t) = cursor.token {
            check_range(t);
        }
        for r in ide::references(&doc.text) {
            check_range(r.span);
        }
        inside(doc.full_range().end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(range: Option<((u32, u32), (u32, u32))>, text: &str) -> TextDocumentContentChangeEvent {
        TextDocumentContentChangeEvent {
            range: range.map(|(s, e)| Range::new(Position::new(s.0, s.1), Position::new(e.0, e.1))),
            range_length: None,
            text: text.into(),
        }
    }

    #[test]
    fn columns_count_utf16_units() {
        // `é` is one UTF-16 unit (two bytes), `😀` two units (four bytes).
        let text = "vm \"w\" {\n    labels a=\"é😀\" b=1\n}\n";
        let idx = LineIndex::new(text);
        let b = text.find("b=1").unwrap();
        assert_eq!(idx.position(text, b), Position::new(1, 19));
        assert_eq!(idx.offset(text, Position::new(1, 19)), b);
        // Inside the surrogate pair: the emoji's start.
        let emoji = text.find('😀').unwrap();
        assert_eq!(idx.offset(text, Position::new(1, 16)), emoji);
        assert_eq!(idx.position(text, emoji + 2), Position::new(1, 15), "a byte inside a character is its start");
    }

    #[test]
    fn crlf_and_lone_cr_end_lines() {
        let text = "a 1\r\nb 2\rc 3\r\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(text, text.find('b').unwrap()), Position::new(1, 0));
        assert_eq!(idx.position(text, text.find('c').unwrap()), Position::new(2, 0));
        // The `\n` of a CRLF is not a column: the line ends before the `\r`.
        assert_eq!(idx.position(text, 4), Position::new(0, 3));
        assert_eq!(idx.offset(text, Position::new(0, 99)), 3);
        assert_eq!(idx.position(text, text.len()), Position::new(3, 0));
    }

    #[test]
    fn positions_outside_the_document_are_clamped() {
        let text = "vm \"é\"\r\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.offset(text, Position::new(7, 3)), text.len());
        assert_eq!(idx.position(text, 1000), Position::new(1, 0));
        for offset in 0..text.len() + 3 {
            let p = idx.position(text, offset);
            assert!(idx.offset(text, p) <= text.len());
            assert!(p.line <= 1, "no line past the end");
        }
    }

    #[test]
    fn incremental_changes_edit_in_place() {
        let mut d = Document::new("vm \"é\" {\r\n    memory \"4G\"\r\n}\r\n".into(), 1);
        d.apply(change(Some(((1, 14), (1, 14))), "i"));
        assert_eq!(d.text, "vm \"é\" {\r\n    memory \"4Gi\"\r\n}\r\n");
        // A range past the end and reversed still applies somewhere inside.
        d.apply(change(Some(((9, 0), (3, 0))), "// end\n"));
        assert!(d.text.ends_with("}\r\n// end\n"));
        d.apply(change(None, "x"));
        assert_eq!(d.text, "x");
        assert_eq!(d.full_range(), Range::new(Position::new(0, 0), Position::new(0, 1)));
    }

    proptest::proptest! {
        // PROPTEST_RNG_SEED (fixed by .ci/run) makes CI's cases the same on every run.
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
        #[test]
        fn random_edits_never_answer_outside_the_document(
            text in "(vm|template|param|\"|#\"|\"#|\\{|\\}|\\$\\{|=|é|😀|\r\n|\r|\n| |x|/\\*|//|;){0,40}",
            edits in proptest::collection::vec(((0u32..8, 0u32..40), (0u32..8, 0u32..40), "(\\{|\\}|\"|é|😀|\r\n|\r|\n|\\$\\{|=|disk|x|;| ){0,3}", (0u32..9, 0u32..45)), 1..12),
        ) {
            let edits: Vec<Edit> = edits.iter().map(|(start, end, text, probe)| Edit { start: *start, end: *end, text, probe: *probe }).collect();
            check_edits(&text, &edits);
        }
    }
}
