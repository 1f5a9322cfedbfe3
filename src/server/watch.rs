//! HTTP/2 responses that make no progress: every one is reset on the wire, and a connection
//! holding nothing else is closed.
//!
//! hyper runs each HTTP/2 stream's response in a future of its own that it hands to the
//! connection's executor. That future polls the response body for one piece, then waits for
//! the peer's flow-control window before it hands the piece to h2 and polls again: while the
//! window is closed, nothing of ours runs, so a body wrapper alone can do nothing about it. So
//! the executor here ([`WatchExec`]) wraps each stream's future in a watchdog ([`Watched`]):
//! when the body has been waiting for the peer for the stall limit (or, for an event stream,
//! when its token expires, it falls too far behind its feed, or the server shuts down, while
//! it waits), the watchdog drops the future. h2 answers the drop of every handle on a stream
//! that is not closed with `RST_STREAM(CANCEL)`, and it discards what it buffered for it, so
//! the end reaches the wire and the memory goes with it.
//!
//! The body ([`Shaper`], inside the server's `Tracked` body) tells the watchdog when it is
//! waiting: from the moment it gives hyper a piece until hyper polls it again, which hyper
//! does only once the window has room for that piece. It gives large chunks in slices, so
//! what h2 buffers beyond the window stays small, and it keeps the last byte of every chunk
//! for a piece of its own: hyper asks for (and h2 then closes the stream with) the body's end
//! only after the window had room for everything before it. Otherwise a body that "ends at
//! once" would leave its end queued behind bytes the peer never accepts, on a stream h2
//! already counts as closed, out of the watchdog's reach.
//!
//! A connection whose every response in flight is waiting for the peer, and on which nothing
//! made progress for the stall limit, is cut as a whole: every stream is reset, and the
//! connection task sends GOAWAY and closes it.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::io::ConnState;
use crate::outlet::StreamEnds;

/// Largest piece of a body handed to hyper at once: what h2 may buffer for a stream beyond
/// its window is at most one piece (and the send buffer's bound).
pub(super) const MAX_PIECE: usize = 16 * 1024;

/// Counts what the watchdogs end.
#[derive(Clone, Debug, Default)]
pub(super) struct WatchCounters {
    /// Event streams ended by the stall limit (`buildlogs_stalled_streams_disconnected_total`).
    pub stalled_streams: Counter,
    /// HTTP/2 responses of any kind reset by the stall limit
    /// (`buildlogs_stalled_responses_reset_total`).
    pub reset_responses: Counter,
    /// HTTP/2 connections closed because every response on them stalled
    /// (`buildlogs_stalled_connections_closed_total`).
    pub closed_connections: Counter,
}

/// What the streams of one HTTP/2 connection share.
pub(super) struct H2Conn {
    state: Arc<ConnState>,
    stall: Duration,
    shutdown: CancellationToken,
    counters: WatchCounters,
    /// Cancelled when the connection is found stalled: every stream is reset, and the
    /// connection task sends GOAWAY.
    cut: CancellationToken,
    /// Set by the watchdog that decides to cut the connection (once).
    closing: AtomicBool,
    /// Streams whose body waits for the peer's window.
    waiting: AtomicUsize,
    /// When a piece of any response on the connection was last accepted, in ms since `born`.
    progress_ms: AtomicU64,
    born: Instant,
}

impl H2Conn {
    pub(super) fn new(
        state: Arc<ConnState>,
        stall: Duration,
        shutdown: CancellationToken,
        counters: WatchCounters,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            stall,
            shutdown,
            counters,
            cut: CancellationToken::new(),
            closing: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Resolves once the connection is found stalled (every stream is being reset).
    pub(super) fn stalled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cut.cancelled()
    }

    fn progressed(&self) {
        self.progress_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Whether nothing on the connection made progress for the stall limit and every request
    /// in flight waits for the peer: then the connection holds nothing but stalled responses.
    fn is_stalled(&self) -> bool {
        let quiet = self.born.elapsed()
            >= Duration::from_millis(self.progress_ms.load(Ordering::Acquire)) + self.stall;
        quiet && self.state.in_flight() <= self.waiting.load(Ordering::Acquire)
    }
}

/// The executor of an HTTP/2 connection: runs each stream's future under a watchdog.
#[derive(Clone)]
pub(super) struct WatchExec(pub(super) Arc<H2Conn>);

impl<F> hyper::rt::Executor<F> for WatchExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let watch = Arc::new(StreamWatch {
            conn: self.0.clone(),
            state: Mutex::default(),
        });
        tokio::spawn(Watched {
            stream: Some(Box::pin(fut)),
            conn_cut: Box::pin(self.0.cut.clone().cancelled_owned()),
            stall: None,
            ends: None,
            watch,
        });
    }
}

tokio::task_local! {
    /// The watch of the stream whose future is being polled: how its response (built inside
    /// that future) finds the watchdog it reports to.
    static CURRENT: Arc<StreamWatch>;
}

/// The watch of the HTTP/2 stream this request is served on; `None` on HTTP/1.
pub(super) fn current() -> Option<Arc<StreamWatch>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// One stream's watch, shared by its watchdog and its response body.
pub(super) struct StreamWatch {
    conn: Arc<H2Conn>,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// Since when the body has been waiting for hyper to take the piece it gave (the peer's
    /// window); `None` while it is not (it has nothing to send, or hyper took it).
    waiting_since: Option<Instant>,
    /// An event stream's ends, for the watchdog to take.
    ends: Option<StreamEnds>,
}

impl StreamWatch {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The response is an event stream: its ends apply while it waits for the peer.
    pub(super) fn end_with(&self, ends: StreamEnds) {
        self.lock().ends = Some(ends);
    }

    /// The body gave hyper a piece: it waits until hyper polls it again.
    fn gave(&self) {
        let mut state = self.lock();
        if state.waiting_since.is_none() {
            self.conn.waiting.fetch_add(1, Ordering::AcqRel);
        }
        state.waiting_since = Some(Instant::now());
    }

    /// hyper polls the body: the piece it gave, if any, was taken.
    fn polled(&self) {
        if self.lock().waiting_since.take().is_some() {
            self.conn.waiting.fetch_sub(1, Ordering::AcqRel);
            self.conn.progressed();
        }
    }

    fn waiting_since(&self) -> Option<Instant> {
        self.lock().waiting_since
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        let waiting = self.lock().waiting_since.is_some();
        if waiting {
            self.conn.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Why a watchdog reset its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Waiting for the peer for the stall limit.
    Stall,
    /// An event stream's end (expiry, lag limit, revocation, shutdown) while waiting for the peer.
    End,
    /// The whole connection stalled.
    Connection,
}

/// A stream's future under its watchdog (see the module docs).
struct Watched<F> {
    /// hyper's future for the stream; dropped to reset it.
    stream: Option<Pin<Box<F>>>,
    watch: Arc<StreamWatch>,
    conn_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The stall deadline, for the wait that started at the instant it holds.
    stall: Option<(Instant, Pin<Box<Sleep>>)>,
    /// An event stream's ends and shutdown, polled only while it waits for the peer.
    ends: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<F: Future<Output = ()>> Watched<F> {
    /// Why the stream must be reset now, if it must.
    fn check(&mut self, cx: &mut Context<'_>) -> Option<Cut> {
        if self.conn_cut.as_mut().poll(cx).is_ready() {
            return Some(Cut::Connection);
        }
        if self.ends.is_none()
            && let Some(ends) = self.watch.lock().ends.take()
        {
            let shutdown = self.watch.conn.shutdown.clone();
            self.ends = Some(Box::pin(async move {
                tokio::select! {
                    () = ends.reached() => {}
                    () = shutdown.cancelled_owned() => {}
                }
            }));
        }
        let since = self.watch.waiting_since()?;
        let deadline = since + self.watch.conn.stall;
        match &mut self.stall {
            Some((started, sleep)) if *started != since => {
                *started = since;
                sleep.as_mut().reset(deadline);
            }
            Some(_) => {}
            None => self.stall = Some((since, Box::pin(tokio::time::sleep_until(deadline)))),
        }
        let (_, sleep) = self.stall.as_mut().expect("set above");
        if sleep.as_mut().poll(cx).is_ready() {
            return Some(Cut::Stall);
        }
        if let Some(ends) = &mut self.ends
            && ends.as_mut().poll(cx).is_ready()
        {
            return Some(Cut::End);
        }
        None
    }

    /// Resets the stream: dropping hyper's future drops every handle on it.
    fn cut(&mut self, why: Cut) {
        let conn = &self.watch.conn;
        let event_stream = self.ends.is_some();
        if why == Cut::Stall {
            conn.counters.reset_responses.inc();
            if event_stream {
                conn.counters.stalled_streams.inc();
                tracing::info!(
                    "an HTTP/2 stream's client read nothing for the stall limit; resetting it"
                );
            } else {
                tracing::debug!(
                    "an HTTP/2 response made no progress for the stall limit; resetting it"
                );
            }
            // Judged before this stream goes: it is one of the responses in flight.
            if conn.is_stalled() && !conn.closing.swap(true, Ordering::AcqRel) {
                tracing::debug!("every response on an HTTP/2 connection stalled; closing it");
                conn.counters.closed_connections.inc();
                conn.cut.cancel();
            }
        }
        self.stream = None;
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(());
        };
        if CURRENT
            .sync_scope(this.watch.clone(), || stream.as_mut().poll(cx))
            .is_ready()
        {
            this.stream = None;
            return Poll::Ready(());
        }
        match this.check(cx) {
            Some(why) => {
                this.cut(why);
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

/// The part of an HTTP/2 response body that paces it for its watchdog (see the module docs):
/// large chunks go in slices, the last byte of each chunk as a piece of its own, and each
/// piece marks the body as waiting until hyper polls again.
pub(super) struct Shaper {
    watch: Arc<StreamWatch>,
    /// What is left of the chunk in hand.
    rest: Bytes,
}

impl Shaper {
    pub(super) fn new(watch: Arc<StreamWatch>) -> Self {
        Self {
            watch,
            rest: Bytes::new(),
        }
    }

    pub(super) fn poll_frame(
        &mut self,
        mut body: Pin<&mut BoxBody<Bytes, io::Error>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.watch.polled();
        if self.rest.is_empty() {
            match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    // Empty data needs no window: hyper sends it straight on.
                    Ok(data) if data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => self.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let piece = match self.rest.len() {
            1 => std::mem::take(&mut self.rest),
            len => self.rest.split_to((len - 1).min(MAX_PIECE)),
        };
        self.watch.gave();
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    /// Whether the body has ended, given whether the wrapped body has.
    pub(super) fn is_end_stream(&self, body_ended: bool) -> bool {
        body_ended && self.rest.is_empty()
    }

    /// Bytes in hand that the wrapped body no longer counts.
    pub(super) fn in_hand(&self) -> u64 {
        self.rest.remaining() as u64
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn watch() -> Arc<StreamWatch> {
        let conn = H2Conn::new(
            Arc::new(ConnState::new()),
            Duration::from_secs(30),
            CancellationToken::new(),
            WatchCounters::default(),
        );
        Arc::new(StreamWatch {
            conn,
            state: Mutex::default(),
        })
    }

    /// The pieces a shaped body gives, with whether it said it had ended after each.
    async fn pieces(body: BoxBody<Bytes, io::Error>) -> (Vec<usize>, Vec<bool>, Arc<StreamWatch>) {
        let watch = watch();
        let mut shaper = Shaper::new(watch.clone());
        let mut body = body;
        let (mut sizes, mut ends) = (Vec::new(), Vec::new());
        loop {
            let frame = std::future::poll_fn(|cx| shaper.poll_frame(Pin::new(&mut body), cx)).await;
            let Some(frame) = frame else { break };
            let data = frame.unwrap().into_data().unwrap();
            assert!(
                data.is_empty() || watch.waiting_since().is_some(),
                "a piece given is waited for"
            );
            sizes.push(data.len());
            ends.push(shaper.is_end_stream(body.is_end_stream()));
        }
        assert!(watch.waiting_since().is_none(), "polled again: not waiting");
        (sizes, ends, watch)
    }

    #[tokio::test]
    async fn a_large_body_goes_in_slices_and_its_last_byte_alone() {
        let body = Full::new(Bytes::from(vec![7u8; 2 * MAX_PIECE + 10]))
            .map_err(|never| match never {})
            .boxed();
        let (sizes, ends, _) = pieces(body).await;
        assert_eq!(sizes, [MAX_PIECE, MAX_PIECE, 9, 1]);
        assert_eq!(
            ends,
            [false, false, false, true],
            "the end comes with the last byte"
        );
    }

    #[tokio::test]
    async fn every_chunk_of_a_stream_keeps_its_last_byte_for_a_piece_of_its_own() {
        let chunks = ["retry: 3000\n\n", "x", "", "event: done\n\n"]
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
        let (sizes, _, watch) = pieces(body).await;
        assert_eq!(sizes, [12, 1, 1, 0, 12, 1]);
        assert_eq!(watch.conn.waiting.load(Ordering::Acquire), 0);
    }
}
