//! The read path that history, download and search share: store reads sized by bytes, and
//! lines collected as the JSON they go out as.
//!
//! A store read asks for a number of entries, and other writers than the runner may write
//! lines of any size, so a fixed count could pull hundreds of megabytes for one page. Reads
//! are sized from the largest entry this reader has seen so far, so that once lines are large
//! every read takes about [`READ_BUDGET`] bytes. A reader's first read, with nothing of its
//! own to go on, is sized from the largest entry any reader saw lately (a process-wide hint,
//! good for [`HINT_TTL`]), and takes at most [`FIRST_READ`] entries, what a default history
//! page needs in one read. (The first page of a log of huge lines, with no hint yet, still
//! reads up to [`FIRST_READ`] of them.)

use std::{
    ops::Range,
    sync::{
        OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    ids::{JobId, StreamId},
    store::{EntryRef, LogStore, Scan, Scanned, Span, StoreResult},
    wire::lines,
};

/// About how many bytes of entries one store read takes, once their size is known.
pub const READ_BUDGET: usize = 1 << 20;
/// Most entries a read takes before any size is known.
pub const FIRST_READ: usize = 101;
/// A page's JSON stays under this (contract §4, §10).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// How long the largest entry a reader saw sizes every reader's first reads.
pub const HINT_TTL: Duration = Duration::from_secs(30);

/// The largest entry any reader saw lately (bytes), and when (ms since [`EPOCH`]).
static RECENT_LARGEST: AtomicUsize = AtomicUsize::new(0);
static RECENT_AT: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The largest entry seen within [`HINT_TTL`], or 0.
fn recent_largest() -> usize {
    let at = RECENT_AT.load(Ordering::Relaxed);
    if now_ms().saturating_sub(at) > HINT_TTL.as_millis() as u64 {
        return 0;
    }
    RECENT_LARGEST.load(Ordering::Relaxed)
}

/// How many entries to read next, at most `want` and `cap`, given the largest entry this
/// reader has seen (0 for none yet).
pub fn read_count(want: usize, cap: usize, largest: usize) -> usize {
    let by_size = match (largest, recent_largest()) {
        (0, 0) => FIRST_READ,
        (0, recent) => (READ_BUDGET / recent).clamp(1, FIRST_READ),
        // What this reader saw of this log is the better guide.
        (largest, _) => (READ_BUDGET / largest).max(1),
    };
    want.min(cap).min(by_size).max(1)
}

/// Records what a read saw, for the sizing of every reader's first reads: an entry as large
/// as the hint, or larger, renews it.
pub fn observe(scanned: &Scanned) {
    if scanned.largest == 0 || scanned.largest < recent_largest() {
        return;
    }
    RECENT_LARGEST.store(scanned.largest, Ordering::Relaxed);
    RECENT_AT.store(now_ms(), Ordering::Relaxed);
}

/// Lines collected as their JSON, in the order read, until a byte budget is passed: past it,
/// only their ids are kept (they prove more lines exist).
#[derive(Default)]
pub struct Collected {
    json: Vec<u8>,
    /// Each line's id and where its JSON is (empty past the budget).
    lines: Vec<(StreamId, Range<usize>)>,
}

impl Collected {
    pub fn push(&mut self, entry: EntryRef<'_>) {
        let start = self.json.len();
        if start <= MAX_PAGE_BYTES {
            lines::json_line(&mut self.json, &entry);
        }
        self.lines.push((entry.id, start..self.json.len()));
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether the JSON held passed the page budget (later lines hold only their ids).
    pub fn over_budget(&self) -> bool {
        self.json.len() > MAX_PAGE_BYTES
    }

    pub fn id(&self, i: usize) -> StreamId {
        self.lines[i].0
    }

    pub fn last_id(&self) -> Option<StreamId> {
        self.lines.last().map(|(id, _)| *id)
    }

    /// The JSON of line `i`, with the comma that separates it from the next.
    pub fn size(&self, i: usize) -> usize {
        self.lines[i].1.len() + 1
    }

    /// The JSON of line `i`.
    pub fn json(&self, i: usize) -> &[u8] {
        &self.json[self.lines[i].1.clone()]
    }
}

/// One direction of reading from a cursor: the lines read so far and whether the span ends.
pub struct Side {
    /// The span of the next read.
    span: Span,
    pub lines: Collected,
    /// The span has no lines beyond those read.
    pub exhausted: bool,
    largest: usize,
    /// Most entries one read may take.
    cap: usize,
}

impl Side {
    pub fn new(span: Span, cap: usize) -> Self {
        Self {
            exhausted: span.is_empty(),
            span,
            lines: Collected::default(),
            largest: 0,
            cap,
        }
    }

    /// The next read towards `want` lines, one more than wanted so that a full read says
    /// whether more remain.
    pub fn scan(&mut self, want: usize) -> Scan<'_> {
        let count = read_count(
            want.saturating_sub(self.lines.len()) + 1,
            self.cap,
            self.largest,
        );
        let lines = &mut self.lines;
        Scan {
            span: self.span,
            count,
            sink: Box::new(move |e: EntryRef<'_>| lines.push(e)),
        }
    }

    /// Whether another read is needed for `want` lines.
    pub fn needs(&self, want: usize) -> bool {
        !self.exhausted && self.lines.len() <= want && !self.lines.over_budget()
    }

    /// Takes note of what the read of `count` entries gave.
    pub fn read(&mut self, count: usize, scanned: Scanned) {
        observe(&scanned);
        self.largest = self.largest.max(scanned.largest);
        if scanned.entries < count {
            self.exhausted = true;
        }
        if let Some(last) = self.lines.last_id() {
            self.span = match self.span {
                Span::Before(_) => Span::Before(Some(last)),
                Span::After { until, .. } => Span::After { after: last, until },
            };
            if self.span.is_empty() {
                self.exhausted = true;
            }
        }
    }

    /// Reads until `want` lines (and one more) are held, the budget is passed, or the span ends.
    pub async fn fill(
        &mut self,
        store: &dyn LogStore,
        job: &JobId,
        want: usize,
    ) -> StoreResult<()> {
        while self.needs(want) {
            let mut scan = self.scan(want);
            let count = scan.count;
            let (_, scanned) = store
                .read(job, false, std::slice::from_mut(&mut scan))
                .await?;
            drop(scan);
            self.read(count, scanned[0]);
        }
        Ok(())
    }
}
