//! ANSI escape sequences out of a line's text: what `ansi=strip` downloads (contract §9) and
//! what search matches against (§10). One function, so that a line found by search reads the
//! same in a stripped download.
//!
//! What goes, following ECMA-48 and ECMA-35 as terminals read them:
//! - CSI, `ESC [`, parameter and intermediate bytes (0x20–0x3F), then a final byte
//!   (0x40–0x7E): colours, cursor moves, erases;
//! - OSC, `ESC ]` up to BEL or ST (`ESC \`): titles, OSC 8 hyperlinks (the link's text stays);
//! - every other escape, `ESC`, intermediate bytes (0x20–0x2F), then a final byte (0x30–0x7E):
//!   the two-byte `ESC x` (`ESC 7`, `ESC =`) and charset selections such as `ESC ( B`, which
//!   `tput sgr0` prints before its `ESC [m`.
//!
//! A sequence cut short ends where it stops being one, as in a terminal: a CSI or an escape
//! interrupted by any other byte (a control character, a non-ASCII byte) or by the end of the
//! line loses what was read of it and the text resumes with that byte; an OSC interrupted by
//! another `ESC` ends there, and an OSC never terminated takes the rest of the line (a
//! terminal would show none of it). Only ASCII bytes of sequences are removed, and an OSC ends
//! only at an ASCII byte, so valid UTF-8 in gives valid UTF-8 out.

use std::borrow::Cow;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Appends `text` without its ANSI escape sequences to `out`.
pub fn strip_into(text: &[u8], out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(at) = memchr::memchr(ESC, rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + skip(&rest[at..])..];
    }
    out.extend_from_slice(rest);
}

/// `text` without its ANSI escape sequences (borrowed when it has none).
pub fn strip(text: &str) -> Cow<'_, str> {
    if memchr::memchr(ESC, text.as_bytes()).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    strip_into(text.as_bytes(), &mut out);
    // Only whole ASCII sequences and whole characters inside an OSC are removed.
    Cow::Owned(String::from_utf8(out).expect("stripping keeps UTF-8 whole"))
}

/// The length of the sequence at the start of `seq` (which starts with ESC).
fn skip(seq: &[u8]) -> usize {
    debug_assert_eq!(seq.first(), Some(&ESC));
    match seq.get(1) {
        Some(b'[') => {
            let body = &seq[2..];
            match body.iter().position(|b| !(0x20..=0x3f).contains(b)) {
                Some(i) if (0x40..=0x7e).contains(&body[i]) => 2 + i + 1,
                // Cut short by another byte, or by the end: that byte resumes the text.
                Some(i) => 2 + i,
                None => seq.len(),
            }
        }
        Some(b']') => {
            let body = &seq[2..];
            match memchr::memchr2(BEL, ESC, body) {
                Some(i) if body[i] == BEL => 2 + i + 1,
                Some(i) if body.get(i + 1) == Some(&b'\\') => 2 + i + 2,
                // Another escape ends the OSC and starts its own sequence.
                Some(i) => 2 + i,
                None => seq.len(),
            }
        }
        _ => {
            let body = &seq[1..];
            match body.iter().position(|b| !(0x20..=0x2f).contains(b)) {
                Some(i) if (0x30..=0x7e).contains(&body[i]) => 1 + i + 1,
                Some(i) => 1 + i,
                None => seq.len(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stripped(text: &str) -> String {
        strip(text).into_owned()
    }

    #[test]
    fn csi_colours_and_cursor_moves() {
        assert_eq!(stripped("\x1b[31merror\x1b[0m: x"), "error: x");
        assert_eq!(stripped("\x1b[1;38;5;196mbold\x1b[m"), "bold");
        assert_eq!(stripped("a\x1b[2Kb\x1b[10;20Hc"), "abc");
        assert_eq!(stripped("\x1b[?25lhidden\x1b[?25h"), "hidden");
        // A colour inside a word does not split it.
        assert_eq!(stripped("pa\x1b[1mni\x1b[22mcked"), "panicked");
    }

    #[test]
    fn osc_titles_and_hyperlinks() {
        assert_eq!(stripped("\x1b]0;my title\x07after"), "after");
        assert_eq!(stripped("\x1b]2;title\x1b\\after"), "after");
        assert_eq!(
            stripped("see \x1b]8;;https://example.com/a?b=c\x1b\\the docs\x1b]8;;\x1b\\ now"),
            "see the docs now"
        );
        assert_eq!(stripped("\x1b]8;id=1;http://x\x07link\x1b]8;;\x07"), "link");
    }

    #[test]
    fn other_escapes() {
        assert_eq!(stripped("\x1b7saved\x1b8"), "saved");
        assert_eq!(stripped("\x1b=keypad\x1b>"), "keypad");
        // `tput sgr0`: a charset selection, then a CSI.
        assert_eq!(stripped("reset\x1b(B\x1b[m done"), "reset done");
        assert_eq!(stripped("\x1bMup"), "up");
    }

    #[test]
    fn malformed_and_unterminated_sequences() {
        // The end of the line cuts them.
        assert_eq!(stripped("text\x1b"), "text");
        assert_eq!(stripped("text\x1b[31"), "text");
        assert_eq!(stripped("text\x1b]0;never ends"), "text");
        assert_eq!(stripped("text\x1b("), "text");
        // Another byte cuts a CSI or an escape, and resumes the text.
        assert_eq!(stripped("a\x1b[31\nb"), "a\nb");
        assert_eq!(stripped("a\x1b[3\x1b[1mb"), "ab");
        assert_eq!(stripped("a\x1b\tb"), "a\tb");
        // An escape inside an OSC ends it and starts its own sequence.
        assert_eq!(stripped("\x1b]0;title\x1b[31mred"), "red");
        // Nothing else is touched.
        assert_eq!(
            stripped("plain [31m ] \\ text\x07"),
            "plain [31m ] \\ text\x07"
        );
        assert_eq!(stripped(""), "");
    }

    #[test]
    fn multibyte_utf8_around_and_inside_sequences() {
        assert_eq!(stripped("ü\x1b[31mñ\x1b[0m✓"), "üñ✓");
        assert_eq!(stripped("\x1b]0;tïtle ✓\x07日本"), "日本");
        // A CSI cut by a multibyte character keeps the character whole.
        assert_eq!(stripped("\x1b[31é"), "é");
        assert_eq!(stripped("\x1b✓"), "✓");
        assert_eq!(stripped("a\x1b]8;;http://ü\x1b\\✓\x1b]8;;\x1b\\"), "a✓");
    }

    #[test]
    fn borrowed_without_escapes() {
        assert!(matches!(strip("no escapes ✓"), Cow::Borrowed(_)));
    }

    /// Text pieces and whole sequences, for the properties below.
    fn piece() -> impl Strategy<Value = (String, bool)> {
        prop_oneof![
            "[^\x1b]{0,8}".prop_map(|s| (s, false)),
            "\x1b\\[[0-9;?]{0,6}[@-~]".prop_map(|s| (s, true)),
            "\x1b\\][^\x1b\x07]{0,12}(\x07|\x1b\\\\)".prop_map(|s| (s, true)),
            "\x1b[ -/]{0,2}[0-Z\\\\^-~]".prop_map(|s| (s, true)),
        ]
    }

    proptest! {
        /// Whole sequences between pieces of text leave exactly the text.
        #[test]
        fn whole_sequences_leave_exactly_the_text(pieces in prop::collection::vec(piece(), 0..12)) {
            let line: String = pieces.iter().map(|(s, _)| s.as_str()).collect();
            let text: String = pieces.iter().filter(|(_, seq)| !seq).map(|(s, _)| s.as_str()).collect();
            prop_assert_eq!(stripped(&line), text);
        }

        /// Any UTF-8 in gives UTF-8 out, no longer than it, with no ESC left, and stripping
        /// again changes nothing.
        #[test]
        fn any_text_stays_utf8_and_loses_every_escape(line in "(\\PC|\x1b|\x07|\\[|\\]|\\\\|[0-9;])*") {
            let once = stripped(&line);
            prop_assert!(once.len() <= line.len());
            prop_assert!(!once.contains('\x1b'));
            prop_assert_eq!(stripped(&once), once.clone());
        }
    }
}
