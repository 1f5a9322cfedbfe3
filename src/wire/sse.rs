//! Server-Sent Event frames, rendered once and shared; and [`StreamEnds`], what the connection
//! writing an event stream needs to end it while its client reads nothing.
//!
//! A log line watched by 2,000 viewers is rendered once (by its feed) and the same bytes go to
//! every socket, so fan-out costs a reference-count increment per viewer, not a JSON encoding.
//! Where the connection lends the stream an [`Outlet`], the feed writes each new line to it
//! itself while the viewer is idle: a line then costs one write per viewer, and no task wakes.

use std::sync::{
    Arc, Mutex, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use futures_util::{
    Stream, StreamExt,
    stream::{self, BoxStream},
};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::payload::{LogLine, StreamEvent};

/// One SSE frame (`retry:`, or `id:`, `event:` and `data:` lines), with its blank line.
pub fn frame(event: &StreamEvent) -> Bytes {
    match event {
        StreamEvent::Retry(retry) => Bytes::from(format!("retry: {}\n\n", retry.retry_ms)),
        StreamEvent::Start(start) => message(Some(&start.position), "start", start),
        StreamEvent::Log(line) => log_frame(line),
        StreamEvent::Heartbeat(beat) => message(None, "heartbeat", beat),
        StreamEvent::Done(done) => message(None, "done", done),
        StreamEvent::Reset(reset) => message(None, "reset", reset),
    }
}

/// A `log` event's frame: `id:` is the line's id.
pub fn log_frame(line: &LogLine) -> Bytes {
    message(Some(&line.id), "log", line)
}

fn message(id: Option<&str>, event: &str, data: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(160);
    if let Some(id) = id {
        buf.extend_from_slice(b"id: ");
        buf.extend_from_slice(id.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // JSON escapes every line break, so the payload is always one `data:` line.
    serde_json::to_writer(&mut buf, data).expect("payloads are plain strings and numbers");
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// Marks a response as an event stream (a response extension): its [`Frames`], for the
/// connection to write itself, its [`StreamEnds`], and where the connection may lend it an
/// [`Outlet`].
#[derive(Clone)]
pub struct EventStream {
    pub frames: Frames,
    pub ends: StreamEnds,
    pub outlet: OutletSlot,
}

/// A stream's connection, as a place its live lines can be written to at once by whichever
/// task has them (the job's feed), in order with everything the stream's own task wrote.
pub trait Outlet: Send + Sync {
    /// Puts `frames` on the connection now, all of them, or none: false when the connection
    /// cannot take them without waiting (its socket is full, a write of the stream's own task
    /// is under way, the client has gone). Once it returns true the frames are the
    /// connection's: what the socket did not take at once, the connection sends before
    /// anything else.
    fn try_put(&self, frames: &[Bytes]) -> bool;
}

/// Where the connection writing a stream lends it an [`Outlet`], once (a connection that
/// leaves the stream to a response body lends none).
#[derive(Clone, Default)]
pub struct OutletSlot(Arc<OnceLock<Arc<dyn Outlet>>>);

impl OutletSlot {
    /// Lends `outlet` to the stream; only the first call counts.
    pub fn lend(&self, outlet: Arc<dyn Outlet>) {
        let _ = self.0.set(outlet);
    }

    /// The outlet, once lent.
    pub fn get(&self) -> Option<&Arc<dyn Outlet>> {
        self.0.get()
    }
}

/// An event stream's frames, taken once: by the connection that writes the stream itself (no
/// body adapters between the frames and the socket), or else by the response body.
#[derive(Clone)]
pub struct Frames(Arc<Mutex<Option<BoxStream<'static, Bytes>>>>);

impl Frames {
    pub fn new(frames: BoxStream<'static, Bytes>) -> Self {
        Self(Arc::new(Mutex::new(Some(frames))))
    }

    /// The frames, unless they were taken already.
    pub fn take(&self) -> Option<BoxStream<'static, Bytes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The frames as a response body's stream, taken at its first poll (empty if the
    /// connection took them).
    pub fn into_body(self) -> impl Stream<Item = Bytes> + Send + 'static {
        stream::once(async move { self.take().unwrap_or_else(|| stream::empty().boxed()) })
            .flatten()
    }
}

/// What must end an event stream even while nobody takes its frames: once a client stops
/// reading, the writes block and the stream itself is no longer polled, so the connection that
/// writes it races its blocked writes against [`StreamEnds::reached`] (and against shutdown,
/// its client leaving and its own stall limit, which it knows itself).
#[derive(Clone, Debug)]
pub struct StreamEnds {
    /// The token's `exp` plus the leeway.
    pub expires_at: Instant,
    /// The lag limit, for a stream following a live feed.
    pub lag: Option<LagWatch>,
}

/// How far a viewer is behind its feed, in lines: the feed's count of published lines against
/// the count when the viewer last took from it.
#[derive(Clone, Debug)]
pub struct LagWatch {
    /// Lines the feed has published so far.
    pub head: watch::Receiver<u64>,
    /// Cancelled when the feed is revoked (the job's record vanished or changed owner): the
    /// stream ends even while its writes are blocked.
    pub revoked: CancellationToken,
    /// `head` when the viewer last took lines from the feed.
    pub mark: Arc<AtomicU64>,
    /// Lines the viewer may fall behind before its stream is ended.
    pub limit: u64,
    /// Counts the streams ended so (`buildlogs_slow_viewers_disconnected_total`).
    pub cut: Counter,
}

impl StreamEnds {
    /// Resolves once the token has expired, the viewer has fallen too far behind, or its feed
    /// was revoked.
    pub async fn reached(mut self) {
        let lag = async {
            let Some(lag) = self.lag.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                if lag.revoked.is_cancelled() {
                    return;
                }
                let head = *lag.head.borrow_and_update();
                if head.saturating_sub(lag.mark.load(Ordering::Relaxed)) > lag.limit {
                    tracing::info!("a blocked viewer fell too far behind; ending its stream");
                    lag.cut.inc();
                    return;
                }
                tokio::select! {
                    () = lag.revoked.cancelled() => return,
                    changed = lag.head.changed() => if changed.is_err() {
                        // The feed is gone (its job finished): it publishes nothing more, and
                        // a feed that is gone can no longer be revoked.
                        return std::future::pending().await;
                    },
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(self.expires_at) => {}
            () = lag => {}
        }
    }
}
