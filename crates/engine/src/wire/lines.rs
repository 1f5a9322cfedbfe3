//! Log lines straight from the store's bytes into what goes out: a line's JSON (the
//! [`LogLine`](super::payload::LogLine) of history pages and search matches) and a download's
//! text line. No entry of our own, no `Value` tree: each field is escaped once, into the
//! output.
//!
//! The JSON is byte for byte what serde_json writes for a `LogLine` (a test holds it to that),
//! so a line reads the same in a page, a search match and a `log` event. Fields that are not
//! UTF-8 (other writers than the runner) go out with U+FFFD in place of their bad bytes, as
//! everywhere else.

use std::borrow::Cow;

use crate::{ansi, ids::StreamId, store::EntryRef};

/// The bytes as UTF-8, with U+FFFD for bytes that are not.
pub fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    // The strict check is the fast one; the lossy walk only for text that fails it.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Whether any of the 8 bytes in `word` must be escaped in JSON: a control character, `"`
/// or `\` (the classic "has a byte less than n" and "has a zero byte" word tricks).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    (control | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))) != 0
}

/// Appends `s` as a JSON string (quotes included), escaped as serde_json escapes it.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most text needs no escape: skip it 8 bytes at a time.
    let mut clean = 0;
    while clean + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[clean..clean + 8].try_into().expect("8 bytes"));
        if needs_escape(word) {
            break;
        }
        clean += 8;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends an id as a JSON string.
pub fn json_id(out: &mut Vec<u8>, id: StreamId) {
    out.push(b'"');
    decimal(out, id.ms);
    out.push(b'-');
    decimal(out, id.seq);
    out.push(b'"');
}

/// Appends `null`, or the id as a JSON string.
pub fn json_opt_id(out: &mut Vec<u8>, id: Option<StreamId>) {
    match id {
        Some(id) => json_id(out, id),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends the line's JSON: `{"id","ts","source","text","phase"}`.
pub fn json_line(out: &mut Vec<u8>, entry: &EntryRef<'_>) {
    out.extend_from_slice(b"{\"id\":");
    json_id(out, entry.id);
    out.extend_from_slice(b",\"ts\":");
    json_str(out, &utf8(entry.ts));
    out.extend_from_slice(b",\"source\":");
    json_str(out, &utf8(entry.source));
    out.extend_from_slice(b",\"text\":");
    json_str(out, &utf8(entry.text));
    out.extend_from_slice(b",\"phase\":");
    json_str(out, &utf8(entry.phase));
    out.push(b'}');
}

/// How a download writes each line (contract §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextFormat {
    /// The line's `ts` and a space before its text.
    pub timestamps: bool,
    /// ANSI escape sequences removed from the text.
    pub strip_ansi: bool,
}

/// Appends the line as a download has it: `[ts ]text\n`.
pub fn text_line(out: &mut Vec<u8>, entry: &EntryRef<'_>, format: TextFormat) {
    if format.timestamps {
        out.extend_from_slice(utf8(entry.ts).as_bytes());
        out.push(b' ');
    }
    let text = utf8(entry.text);
    if format.strip_ansi {
        ansi::strip_into(text.as_bytes(), out);
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::payload::LogLine;

    fn serde_line(entry: &EntryRef<'_>) -> String {
        serde_json::to_string(&LogLine {
            id: entry.id.to_string(),
            ts: utf8(entry.ts).into_owned(),
            source: utf8(entry.source).into_owned(),
            text: utf8(entry.text).into_owned(),
            phase: utf8(entry.phase).into_owned(),
        })
        .unwrap()
    }

    fn ours(entry: &EntryRef<'_>) -> String {
        let mut out = Vec::new();
        json_line(&mut out, entry);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_is_what_serde_writes() {
        for text in [
            "",
            "plain",
            "quote \" back \\ slash",
            "ctl \u{0}\u{1}\u{1f} \n\r\t\u{8}\u{c}",
            "ünï©ødé ✓ \u{2028}",
            "\u{7f}\u{1b}[31mred",
        ] {
            let entry = EntryRef {
                id: StreamId::new(1795629015873, 12),
                ts: b"2026-11-24T03:05:57.123456+00:00",
                source: b"stderr",
                text: text.as_bytes(),
                phase: b"install",
            };
            assert_eq!(ours(&entry), serde_line(&entry), "{text:?}");
        }
        let bad = EntryRef {
            id: StreamId::MAX,
            text: b"bad \xff\xfe utf-8 \xe2\x9c",
            ..EntryRef::default()
        };
        assert_eq!(ours(&bad), serde_line(&bad));
        assert!(ours(&bad).contains("bad \u{fffd}\u{fffd} utf-8 \u{fffd}"));
    }

    #[test]
    fn text_lines_with_and_without_timestamps_and_ansi() {
        let entry = EntryRef {
            id: StreamId::new(1, 0),
            ts: b"2026-11-24T03:05:57.123456+00:00",
            text: b"\x1b[31merror\x1b[0m: x",
            ..EntryRef::default()
        };
        let line = |timestamps, strip_ansi| {
            let mut out = Vec::new();
            text_line(
                &mut out,
                &entry,
                TextFormat {
                    timestamps,
                    strip_ansi,
                },
            );
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line(false, false), "\x1b[31merror\x1b[0m: x\n");
        assert_eq!(line(false, true), "error: x\n");
        assert_eq!(
            line(true, true),
            "2026-11-24T03:05:57.123456+00:00 error: x\n"
        );
    }

    #[test]
    fn the_word_check_finds_every_byte_to_escape() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                let must = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    must,
                    "{b:#x} at {at}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_fields_serialise_as_serde_would(
            ms: u64, seq: u64,
            ts in any::<Vec<u8>>(), text in "\\PC*|[\\x00-\\x7f]*", phase in any::<Vec<u8>>(),
        ) {
            let entry = EntryRef { id: StreamId::new(ms, seq), ts: &ts, source: b"stdout", text: text.as_bytes(), phase: &phase };
            prop_assert_eq!(ours(&entry), serde_line(&entry));
        }
    }
}
