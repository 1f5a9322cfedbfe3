//! History pages ("Load earlier", contract §4): the lines strictly older than a cursor, read
//! newest first from the store and served oldest first, under a byte bound.

use crate::{
    ids::{JobId, StreamId},
    store::{LogEntry, LogStore, StoreResult},
    wire::payload::{HistoryPage, LogLine, Nullable},
};

/// A page's JSON stays under this, whatever the lines hold (other writers than the runner may
/// write long lines): it stops early, with at least one line, and says `has_more`.
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// Most entries read from the store at once: a page of the default size is one read, and a
/// page of long lines never holds more than this many of them in memory beyond what it sends.
const READ_CHUNK: usize = 101;
/// The page's JSON around its lines: `{"lines":[`, `],"has_more":false,"oldest_id":"<id>"}`.
const PAGE_OVERHEAD: usize = 96;
/// A line's JSON around its five strings (keys, quotes, colons, commas, braces), and the
/// comma that separates it from the next.
const LINE_OVERHEAD: usize = 51;

/// Up to `limit` lines strictly older than `before` (the newest lines when `None`).
pub async fn page(
    store: &dyn LogStore,
    job: &JobId,
    before: Option<StreamId>,
    limit: usize,
) -> StoreResult<HistoryPage> {
    let mut lines: Vec<LogEntry> = Vec::new();
    let mut bytes = PAGE_OVERHEAD;
    let mut cursor = before;
    let has_more = 'read: loop {
        // One more than needed says whether older lines remain.
        let want = (limit - lines.len() + 1).min(READ_CHUNK);
        let chunk = store.range_before(job, cursor, want).await?;
        let exhausted = chunk.len() < want;
        for entry in chunk {
            if lines.len() == limit {
                break 'read true;
            }
            let size = json_size(&entry);
            if !lines.is_empty() && bytes + size > MAX_PAGE_BYTES {
                break 'read true;
            }
            bytes += size;
            cursor = Some(entry.id);
            lines.push(entry);
        }
        if exhausted {
            break false;
        }
    };
    lines.reverse();
    let oldest_id = lines.first().map(|e| e.id.to_string());
    Ok(HistoryPage {
        lines: lines.into_iter().map(LogLine::from).collect(),
        has_more,
        oldest_id: Nullable(oldest_id),
    })
}

/// The size of an entry as a [`LogLine`] in a page's JSON, its separating comma included.
fn json_size(entry: &LogEntry) -> usize {
    let digits = |n: u64| n.checked_ilog10().unwrap_or(0) as usize + 1;
    LINE_OVERHEAD
        + digits(entry.id.ms)
        + 1
        + digits(entry.id.seq)
        + [&entry.ts, &entry.source, &entry.text, &entry.phase]
            .iter()
            .map(|s| json_str_len(s))
            .sum::<usize>()
}

/// Bytes `s` takes inside a JSON string, as serde_json escapes it.
fn json_str_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_for_what_serde_json_writes() {
        for text in [
            "",
            "plain",
            "quote \" back \\ slash",
            "ctl \u{0}\u{1}\u{1f} \n\r\t\u{8}\u{c}",
            "ünï©ødé ✓ \u{2028}",
            "\u{7f}",
        ] {
            assert_eq!(
                json_str_len(text) + 2,
                serde_json::to_string(text).unwrap().len(),
                "{text:?}"
            );
        }
        let entry = LogEntry {
            id: StreamId::MAX,
            ts: "2026-11-24T03:05:57.123456+00:00".into(),
            source: "stderr".into(),
            text: "x\n\"y\"".into(),
            phase: "install".into(),
        };
        for id in [
            StreamId::MAX,
            StreamId::ZERO,
            StreamId::new(1795629015873, 12),
        ] {
            let entry = LogEntry {
                id,
                ..entry.clone()
            };
            let actual = serde_json::to_string(&LogLine::from(entry.clone()))
                .unwrap()
                .len();
            assert_eq!(json_size(&entry), actual + 1, "{id}: its JSON and a comma");
        }
    }
}
