//! History pages (contract §4): "Load earlier" (`before_id`), "Load later" (`after_id`) and a
//! line's permalink (`around_id`), each under a byte bound, served oldest first.
//!
//! A page is read in one round trip where the store can: the job record, the page's range
//! and a probe of one or two ids on the other side of the cursor (which says whether lines
//! exist there), pipelined. Lines go from the store's reply straight into the page's JSON
//! ([`paging`](crate::paging)); only a page of long lines needs more reads, each sized by bytes.

use crate::{
    ids::{JobId, StreamId},
    paging::{Collected, MAX_PAGE_BYTES, Side},
    store::{EntryRef, LogStore, Scan, Span, StoreResult},
    wire::lines::json_opt_id,
};

/// Where a page is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// The newest lines.
    Newest,
    /// Lines strictly older than the id, the newest of them.
    Before(StreamId),
    /// Lines strictly newer than the id, the oldest of them.
    After(StreamId),
    /// The line (or where it would stand), about half the page before it, the rest after.
    Around(StreamId),
}

/// The page's JSON around its lines, ids at their longest: what the budget keeps free.
const PAGE_OVERHEAD: usize = 160;
/// Most entries one read of a page takes: a whole page of the largest size and one more.
const READ_CAP: usize = 501;
/// Lines a page's lines may fill.
const BUDGET: usize = MAX_PAGE_BYTES - PAGE_OVERHEAD;

/// The page of `job` at `cursor` with at most `limit` lines, as its JSON; `None` when the job
/// does not exist or is not `owner`'s.
pub async fn page(
    store: &dyn LogStore,
    job: &JobId,
    owner: &str,
    cursor: Cursor,
    limit: usize,
) -> StoreResult<Option<Vec<u8>>> {
    // The page's lines come from `main` (and, around an id, from `older` too); `probe` holds
    // up to two ids on the other side of a `before_id` or `after_id`.
    let (mut main, mut older) = match cursor {
        Cursor::Newest => (Side::new(Span::Before(None), READ_CAP), None),
        Cursor::Before(b) => (Side::new(Span::Before(Some(b)), READ_CAP), None),
        Cursor::After(a) | Cursor::Around(a) => (
            Side::new(
                Span::After {
                    after: a,
                    until: None,
                },
                READ_CAP,
            ),
            matches!(cursor, Cursor::Around(_))
                .then(|| Side::new(Span::Before(Some(a.next())), READ_CAP)),
        ),
    };
    let probe_span = match cursor {
        Cursor::Before(b) => Some(Span::After {
            after: b.prev().unwrap_or(StreamId::ZERO),
            until: None,
        }),
        Cursor::After(a) => Some(Span::Before(Some(a.next()))),
        Cursor::Newest | Cursor::Around(_) => None,
    };
    let mut probe: Vec<StreamId> = Vec::new();

    // The first round: record, range(s) and probe, together.
    let (record, counts) = {
        let mut scans: Vec<Scan<'_>> = Vec::with_capacity(3);
        scans.push(main.scan(limit));
        if let Some(older) = older.as_mut() {
            scans.push(older.scan(limit));
        }
        if let Some(span) = probe_span {
            let probe = &mut probe;
            scans.push(Scan {
                span,
                count: 2,
                sink: Box::new(move |e: EntryRef<'_>| probe.push(e.id)),
            });
        }
        let counts: Vec<usize> = scans.iter().map(|s| s.count).collect();
        let (record, scanned) = store.read(job, true, &mut scans).await?;
        drop(scans);
        (record, counts.into_iter().zip(scanned).collect::<Vec<_>>())
    };
    if record.is_none_or(|r| r.user_id != owner) {
        return Ok(None);
    }
    main.read(counts[0].0, counts[0].1);
    if let Some(older) = older.as_mut() {
        older.read(counts[1].0, counts[1].1);
    }
    main.fill(store, job, limit).await?;
    if let Some(older) = older.as_mut() {
        older.fill(store, job, limit).await?;
    }

    Ok(Some(match (cursor, older) {
        (Cursor::Around(anchor), Some(older)) => around(&older, &main, anchor, limit),
        (Cursor::Newest, _) => one_way(&main, limit, false, |_| false),
        (Cursor::Before(b), _) => {
            // Newer than the page: any line from `b` on; for an empty page, newer than `b`.
            one_way(&main, limit, false, |empty| {
                probe.iter().any(|&id| !empty || id > b)
            })
        }
        (_, _) => {
            let Cursor::After(a) = cursor else {
                unreachable!("around has an older side")
            };
            one_way(&main, limit, true, |empty| {
                probe.iter().any(|&id| !empty || id < a)
            })
        }
    }))
}

/// Most of the first `limit` lines of `lines` that fit the budget (always one, if any).
fn fitting(lines: &Collected, limit: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    while n < lines.len().min(limit) {
        bytes += lines.size(n);
        if n > 0 && bytes > BUDGET {
            break;
        }
        n += 1;
    }
    n
}

/// A page read one way from its cursor: `forward` for `after_id` (read oldest first), else
/// newest first. `beyond_cursor(empty)` says whether lines exist on the cursor's other side.
fn one_way(
    side: &Side,
    limit: usize,
    forward: bool,
    beyond_cursor: impl FnOnce(bool) -> bool,
) -> Vec<u8> {
    let n = fitting(&side.lines, limit);
    let further = n < side.lines.len() || !side.exhausted;
    let behind = beyond_cursor(n == 0);
    let (has_more, has_newer) = if forward {
        (behind, further)
    } else {
        (further, behind)
    };
    let order: Vec<usize> = if forward {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    };
    let lines: Vec<&[u8]> = order.iter().map(|&i| side.lines.json(i)).collect();
    let ids = |i: Option<&usize>| i.map(|&i| side.lines.id(i));
    render(
        &lines,
        has_more,
        ids(order.first()),
        has_newer,
        ids(order.last()),
    )
}

/// The page around `anchor`: `older` holds lines up to and including it, newest first,
/// `newer` the lines after it.
fn around(older: &Side, newer: &Side, anchor: StreamId, limit: usize) -> Vec<u8> {
    let has_anchor = !older.lines.is_empty() && older.lines.id(0) == anchor;
    let first_older = usize::from(has_anchor);
    let older_avail = older.lines.len() - first_older;
    let newer_avail = newer.lines.len();
    let rest = limit - first_older;
    let mut before = (rest / 2).min(older_avail);
    let mut after = (rest - rest / 2).min(newer_avail);
    // A side that runs short leaves its share to the other.
    let spare = rest - before - after;
    let more_before = spare.min(older_avail - before);
    before += more_before;
    after += (spare - more_before).min(newer_avail - after);

    // Under the budget: drop lines from the far ends, never the anchor (nor the last line).
    let size_before = |n: usize| (first_older..first_older + n).map(|i| older.lines.size(i));
    let mut bytes: usize = size_before(before).sum::<usize>()
        + (0..after).map(|i| newer.lines.size(i)).sum::<usize>()
        + if has_anchor { older.lines.size(0) } else { 0 };
    while bytes > BUDGET && before + after + first_older > 1 {
        if after >= before && after > 0 {
            after -= 1;
            bytes -= newer.lines.size(after);
        } else {
            before -= 1;
            bytes -= older.lines.size(first_older + before);
        }
    }

    let mut order: Vec<(&Collected, usize)> = (0..before + first_older)
        .rev()
        .map(|i| (&older.lines, i))
        .collect();
    order.extend((0..after).map(|i| (&newer.lines, i)));
    let lines: Vec<&[u8]> = order.iter().map(|(c, i)| c.json(*i)).collect();
    let ids = |e: Option<&(&Collected, usize)>| e.map(|(c, i)| c.id(*i));
    render(
        &lines,
        before < older_avail || !older.exhausted,
        ids(order.first()),
        after < newer_avail || !newer.exhausted,
        ids(order.last()),
    )
}

/// `{"lines":[…],"has_more":…,"oldest_id":…,"has_newer":…,"newest_id":…}`.
fn render(
    lines: &[&[u8]],
    has_more: bool,
    oldest: Option<StreamId>,
    has_newer: bool,
    newest: Option<StreamId>,
) -> Vec<u8> {
    let size: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut out = Vec::with_capacity(size + PAGE_OVERHEAD);
    out.extend_from_slice(b"{\"lines\":[");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"],\"has_more\":");
    out.extend_from_slice(if has_more { b"true" } else { b"false" });
    out.extend_from_slice(b",\"oldest_id\":");
    json_opt_id(&mut out, oldest);
    out.extend_from_slice(b",\"has_newer\":");
    out.extend_from_slice(if has_newer { b"true" } else { b"false" });
    out.extend_from_slice(b",\"newest_id\":");
    json_opt_id(&mut out, newest);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overhead_covers_the_longest_page_skeleton() {
        let skeleton = render(&[], true, Some(StreamId::MAX), false, Some(StreamId::MAX));
        assert!(skeleton.len() <= PAGE_OVERHEAD, "{}", skeleton.len());
    }
}
