//! The fan-out of live lines: one shared feed per followed job per instance, so Redis work per
//! line does not depend on the number of viewers, and viewers never hold a Redis connection.
//!
//! - [`hub`]: the registry of feeds. A viewer [`Hub::subscribe`]s and asks its
//!   [`Subscription`] for what comes [`next`](Subscription::next): [`Next::Lines`] that follow
//!   its position, a [`Next::Gap`] to read from the store by id (it joined mid-burst, or lagged
//!   behind the feed's bounded ring), or [`Next::Done`]. How far behind a viewer is, and what
//!   it missed, is the subscription's business; the viewer only reads by id when told.
//! - [`reader`]: a fixed set of reader tasks (`REDIS_LIVE_READERS`), each running one blocking
//!   multi-stream read over all the jobs assigned to it and publishing each batch to the job's
//!   feed, rendered once.
//! - [`monitor`]: watches followed jobs for turning terminal or changing hands (Pub/Sub hints,
//!   confirmed against the job record, with a periodic sweep as the safety net because Pub/Sub
//!   is lossy). A finished job's reader drains what is left and marks the feed done; a job whose
//!   record vanished or changed owner has its feed revoked, which ends its streams.

pub mod hub;
mod monitor;
mod reader;

use std::sync::Arc;

use bytes::Bytes;

pub use hub::{Hub, Subscription};

use crate::{
    ids::StreamId,
    store::{JobStatus, LogEntry},
    wire::{payload::LogLine, sse::log_frame},
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
            frame: log_frame(&LogLine::from(entry)),
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
