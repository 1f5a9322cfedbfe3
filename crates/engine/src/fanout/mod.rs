//! The fan-out of live lines: one shared feed per followed job per instance, so Redis work per
//! line does not depend on the number of viewers, and viewers never hold a Redis connection.
//!
//! - [`hub`]: the registry of feeds. A viewer [`Hub::subscribe`]s and asks its
//!   [`Subscription`] for what comes [`next`](Subscription::next): [`Next::Lines`] that follow
//!   its position, a [`Next::Gap`] to read from the store by id (it joined mid-burst, or lagged
//!   behind the feed's bounded ring), or [`Next::Done`]. How far behind a viewer is, and what
//!   it missed, is the subscription's business; the viewer only reads by id when told.
//! - [`channel`]: a feed's ring of recent batches and its receivers' cursors, and direct
//!   delivery: a viewer idle on its feed [`Subscription::arm`]s it with its connection's
//!   [`Outlet`], and the feed writes new lines there itself, waking the viewer only when it
//!   cannot.
//! - [`reader`]: a fixed set of reader tasks (`REDIS_LIVE_READERS`), each running one blocking
//!   multi-stream read over all the jobs assigned to it and publishing each batch to the job's
//!   feed, rendered once.
//! - [`monitor`]: watches followed jobs for turning terminal or changing hands (Pub/Sub hints,
//!   confirmed against the job record, with a periodic sweep as the safety net because Pub/Sub
//!   is lossy). A finished job's reader drains what is left and marks the feed done; a job whose
//!   record vanished or changed owner has its feed revoked, which ends its streams.

mod channel;
pub mod hub;
mod monitor;
#[cfg(feature = "bench-naive")]
mod naive;
mod reader;

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

pub use hub::Hub;

use crate::{
    ids::StreamId,
    outlet::{LagWatch, Outlet},
    store::{JobStatus, LogEntry},
    wire::{frames::log_frame, payload::LogLine},
};

/// A log line as it goes on the wire, rendered once for every viewer.
#[derive(Clone, Debug)]
pub struct Line {
    pub id: StreamId,
    pub frame: Bytes,
}

impl Line {
    pub fn render(entry: LogEntry) -> Self {
        Self {
            id: entry.id,
            frame: log_frame(&log_line(entry)),
        }
    }
}

/// The job finished: every line up to `last` has been published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub status: JobStatus,
    pub last: StreamId,
}

/// Lines for a viewer: `lines[skip..]` directly follow its position, in order.
#[derive(Clone, Debug)]
pub struct Batch {
    lines: Arc<[Line]>,
    skip: usize,
}

impl Batch {
    pub fn lines(&self) -> &[Line] {
        &self.lines[self.skip..]
    }
}

/// What a [`Subscription`] has next for its viewer.
#[derive(Debug)]
pub enum Next {
    /// Lines directly after the viewer's position.
    Lines(Batch),
    /// Lines after the viewer's position may be only in the store: read them by id, then call
    /// [`Subscription::caught_up`] and ask again. `budget`: for a viewer that fell behind the
    /// feed, how many lines it may still read before its stream is ended (it resumes with
    /// `Last-Event-ID`); `None` for one that only joined mid-burst.
    Gap { budget: Option<usize> },
    /// The job finished; lines up to `last` that the viewer has not seen are in the store.
    Done(Done),
    /// The job's record vanished or changed owner: the stream must end at once.
    Revoked,
}

/// A viewer's hold on its job's live lines.
pub struct Subscription(Source);

enum Source {
    /// The job's shared feed (the product).
    Feed(hub::FeedSubscription),
    /// This viewer's own blocking reads and status checks: the naive design the fan-out
    /// replaced, kept for the benchmark's side-by-side numbers only.
    #[cfg(feature = "bench-naive")]
    Naive(naive::NaiveSubscription),
}

impl Subscription {
    fn feed(feed: hub::FeedSubscription) -> Self {
        Self(Source::Feed(feed))
    }

    #[cfg(feature = "bench-naive")]
    fn naive(naive: naive::NaiveSubscription) -> Self {
        Self(Source::Naive(naive))
    }

    /// What comes next for a viewer whose last line is `pos` (see [`Next`]).
    pub async fn next(&mut self, pos: StreamId) -> Next {
        match &mut self.0 {
            Source::Feed(feed) => feed.next(pos).await,
            #[cfg(feature = "bench-naive")]
            Source::Naive(naive) => naive.next(pos).await,
        }
    }

    /// The viewer has read the store up to the live end after a [`Next::Gap`].
    pub fn caught_up(&self) {
        match &self.0 {
            Source::Feed(feed) => feed.caught_up(),
            #[cfg(feature = "bench-naive")]
            Source::Naive(_) => {}
        }
    }

    /// Lets the feed write the lines after `pos` straight to `outlet` (the viewer's
    /// connection) while the viewer waits for [`next`](Self::next), until `expires_at`: a line
    /// then wakes the viewer only when the outlet cannot take it. Call [`disarm`](Self::disarm)
    /// when the wait ends.
    pub fn arm(&self, outlet: &Arc<dyn Outlet>, pos: StreamId, expires_at: Instant) {
        match &self.0 {
            Source::Feed(feed) => feed.arm(outlet, pos, expires_at),
            #[cfg(feature = "bench-naive")]
            Source::Naive(_) => {}
        }
    }

    /// Takes the outlet back: the last line the feed wrote to it since [`arm`](Self::arm), and
    /// when (`None` if it wrote none).
    pub fn disarm(&self) -> Option<(StreamId, Instant)> {
        match &self.0 {
            Source::Feed(feed) => feed.disarm(),
            #[cfg(feature = "bench-naive")]
            Source::Naive(_) => None,
        }
    }

    /// How far behind the feed this viewer is, for the connection writing its stream.
    pub fn lag_watch(&self) -> Option<LagWatch> {
        match &self.0 {
            Source::Feed(feed) => Some(feed.lag_watch()),
            #[cfg(feature = "bench-naive")]
            Source::Naive(_) => None,
        }
    }
}

/// A store entry as the line that goes on the wire. Fields missing in the store are empty
/// strings.
fn log_line(e: LogEntry) -> LogLine {
    LogLine {
        id: e.id.to_string(),
        ts: e.ts,
        source: e.source,
        text: e.text,
        phase: e.phase,
    }
}
