//! Writing an event stream ourselves, and ending it on every path.
//!
//! Once a stream has left hyper ([`Detached`], HTTP/1), nothing of hyper's watches the
//! connection any more, so the writer does: it keeps reading the socket and discards what
//! arrives (end-of-file, a reset or any error means the client is gone), and it races every
//! blocked write against the stream's ends ([`StreamEnds`]: token expiry, lag limit, revocation), shutdown,
//! the client leaving and the stall limit (no write progress for that long). So a stream ends
//! however its client leaves or stalls, and releases everything it held at once.
//!
//! A detached stream also lends its engine an [`Outlet`] ([`Wire`]): while the writer has
//! nothing in hand, the job's feed writes new lines to the socket itself, in order with the
//! writer's own writes, and the writer's task sleeps through them.
//!
//! What a stalled connection holds: a put takes at most [`MAX_PUT_BYTES`] (16 KiB), and what
//! the socket did not take of it is copied into the `Wire`'s tail until the writer sends it.
//! So beyond the socket's own buffers and the feed's shared ring, the tails of an instance's
//! stalled viewers hold at most 16 KiB × `MAX_STREAMS` (320 MB at the default 20,000; a few
//! hundred bytes each in practice, since a put is usually one line). A stream that does not
//! drain its tail is ended by the stall limit like any other.
//!
//! An event stream on HTTP/2 stays in hyper (one connection carries many streams): its ends
//! are applied by the stream's watchdog (`server::watch`).

use std::{
    future::Future,
    io,
    io::IoSlice,
    pin::Pin,
    sync::Arc,
    task::{Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{FutureExt, future::BoxFuture, stream::BoxStream};
use poem::{Response, http::Version};
use tokio::{net::TcpStream, time::Instant};
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::counter::Counter;

use crate::{
    gate::{Gated, GatedStream},
    sync::{Mutex, MutexGuard, lock},
    wire::sse::{Outlet, OutletSlot, StreamEnds},
};

/// Most body chunks gathered into one write when several are ready at once (a catch-up).
const MAX_CHUNKS_PER_WRITE: usize = 32;

/// How the writer learns a stream must stop.
pub(super) struct Limits<'a> {
    pub shutdown: &'a CancellationToken,
    /// No write progress for this long ends the stream.
    pub stall: Duration,
    /// Counts the streams so ended.
    pub stalled: &'a Counter,
    /// Counts the puts the socket took only part of (`buildlogs_partial_puts_total`).
    pub partial_puts: &'a Counter,
}

/// An event stream taken out of hyper: its encoded head, its frames and its ends.
pub(super) struct Detached {
    head: Vec<u8>,
    body: BoxStream<'static, Bytes>,
    ends: StreamEnds,
    /// Where the stream takes the [`Wire`] it is lent.
    outlet: OutletSlot,
    /// HTTP/1.1: chunked; HTTP/1.0: the body ends with the connection.
    chunked: bool,
}

impl Detached {
    pub(super) fn new(
        resp: &Response,
        version: Version,
        frames: BoxStream<'static, Bytes>,
        ends: StreamEnds,
        outlet: OutletSlot,
    ) -> Self {
        let chunked = version == Version::HTTP_11;
        let head = encode_head(resp, chunked);
        Self {
            head,
            body: frames,
            ends,
            outlet,
            chunked,
        }
    }
}

/// The HTTP/1.x head of a detached response: its status and headers, chunked on HTTP/1.1,
/// and `Connection: close` (the stream ends with the connection).
fn encode_head(resp: &Response, chunked: bool) -> Vec<u8> {
    let status = resp.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(if chunked { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "date" | "keep-alive"
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Why a detached stream stopped early.
#[derive(Debug)]
enum Stop {
    /// The client left, the socket failed, or the body failed.
    Gone,
    /// Shutdown, token expiry, lag limit, revocation or stall while a write was blocked.
    Cut,
}

/// A detached stream's connection, lent to the stream as its [`Outlet`]: the feed writes live
/// lines to the socket itself while the writer task has nothing in hand. Generic over what it
/// writes to so that its loom model (`model`) can drive its state machine against a socket that takes
/// what the model says; the service only ever has a [`TcpStream`] there.
pub(crate) struct Wire<S = TcpStream> {
    socket: Arc<S>,
    chunked: bool,
    state: Mutex<WireState>,
    /// Puts the socket took only part of (their rest went to the tail).
    partial_puts: Counter,
}

struct WireState {
    /// The writer task holds frames it has not written, or is taking them from the body: the
    /// outlet takes nothing, so that nothing overtakes them.
    busy: bool,
    /// What the socket did not take of a put: the writer sends it before anything else.
    tail: Vec<u8>,
    /// A put's write failed: the client has gone.
    broken: bool,
    /// The writer task, while it waits.
    waker: Option<Waker>,
}

/// Where a [`Wire`] writes: something that takes what it can at once, never waiting.
pub(crate) trait WriteNow: Send + Sync {
    /// Writes as much of `pieces` as it takes now, in order: the bytes written.
    fn write_now<'p>(&self, pieces: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize>;
}

impl WriteNow for TcpStream {
    fn write_now<'p>(&self, pieces: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize> {
        write_now(self, pieces)
    }
}

/// What the writer must do before it takes frames of its own (see [`Wire::claim`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// A put's write failed: the client has gone.
    Gone,
    /// Send what a put left unsent, then claim again.
    Tail(Vec<u8>),
    /// The connection is the writer's: puts take nothing until it [`lend`](Wire::lend)s it.
    Claimed,
}

impl<S> Wire<S> {
    pub(crate) fn new(socket: Arc<S>, chunked: bool, partial_puts: Counter) -> Self {
        Self {
            socket,
            chunked,
            // Busy until the writer has sent the head and the stream's first frames.
            state: Mutex::new(WireState {
                busy: true,
                tail: Vec::new(),
                broken: false,
                waker: None,
            }),
            partial_puts,
        }
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        lock(&self.state)
    }

    /// The writer takes the connection for frames of its own, unless a put failed or left
    /// bytes that must go first.
    pub(crate) fn claim(&self) -> Claim {
        let mut state = self.lock();
        if state.broken {
            return Claim::Gone;
        }
        if !state.tail.is_empty() {
            return Claim::Tail(std::mem::take(&mut state.tail));
        }
        state.busy = true;
        Claim::Claimed
    }

    /// The writer has nothing in hand: puts may write until it claims the connection again,
    /// and `waker` is woken when one leaves it something to do (a tail, a failure).
    pub(crate) fn lend(&self, waker: &Waker) {
        let mut state = self.lock();
        state.busy = false;
        match &mut state.waker {
            Some(current) if current.will_wake(waker) => {}
            current => *current = Some(waker.clone()),
        }
    }
}

/// Largest put a [`Wire`] takes: what the socket does not take of it is copied, so this bounds
/// what a stalled viewer's connection holds beyond the feed's shared ring. A larger batch (a
/// burst) goes through the stream's own task, which writes it from the shared frames.
pub(crate) const MAX_PUT_BYTES: usize = 16 * 1024;

impl<S: WriteNow> Outlet for Wire<S> {
    fn try_put(&self, frames: &[Bytes]) -> bool {
        // The write happens with this lock held (and, from the feed, the receiver's slot
        // lock): it is what keeps the writer's own writes from overtaking or splitting the
        // put's bytes, and what makes "taken" and "the tail is the writer's" one step. Both
        // locks are this one viewer's, taken in that order everywhere (the writer never holds
        // this one while it polls its stream); the write never waits (what the socket does not
        // take goes to the tail). The loom models check a partial put against the writer
        // (`model`) and the feed's puts under both locks against the stream's task
        // (`fanout::channel`'s model): no deadlock, every line once, whole, in order.
        let mut state = self.lock();
        if state.busy || state.broken {
            return false;
        }
        let sizes = SizeLines::of(frames, self.chunked);
        let pieces = || wire_pieces(frames, &sizes, self.chunked);
        let total: usize = pieces().map(<[u8]>::len).sum();
        if total > MAX_PUT_BYTES {
            return false;
        }
        let (taken, wake) = match self.socket.write_now(pieces()) {
            Ok(written) if written == total => (true, false),
            // Nothing went: the stream's own task sends them, racing its ends.
            Ok(0) => (false, false),
            // The rest is the writer's to send, before anything else.
            Ok(written) => {
                let mut skip = written;
                for piece in pieces() {
                    let from = skip.min(piece.len());
                    state.tail.extend_from_slice(&piece[from..]);
                    skip -= from;
                }
                state.busy = true;
                self.partial_puts.inc();
                (true, true)
            }
            Err(_) => {
                state.broken = true;
                (false, true)
            }
        };
        let waker = wake.then(|| state.waker.take()).flatten();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        taken
    }
}

/// What the writer does next.
enum Step {
    /// Write the frames in hand.
    Write,
    /// Send what a put left unsent.
    Tail(Vec<u8>),
    /// The client has gone.
    Gone,
}

/// Writes a detached stream to its end: the head, every frame as it comes (batched into one
/// write when several are ready), the last chunk; then closes the connection gracefully.
/// Meanwhile the stream is lent a [`Wire`] on the same socket, for its feed's writes.
pub(super) async fn write_detached(socket: Arc<TcpStream>, detached: Detached, limits: Limits<'_>) {
    let Detached {
        head,
        body,
        ends,
        outlet,
        chunked,
    } = detached;
    let wire = Arc::new(Wire::new(
        socket.clone(),
        chunked,
        limits.partial_puts.clone(),
    ));
    outlet.lend(wire.clone());
    let socket = &*socket;
    let mut out = Out {
        socket,
        limits,
        ends: &ends,
        // One future for the stream's whole life: its registration with the socket is made once.
        gone: Gated::new(client_gone(socket).boxed()),
    };
    if out.send(&mut [IoSlice::new(&head)]).await.is_err() {
        return;
    }
    drop(head);
    let mut chunks: Vec<Bytes> = Vec::new();
    // Gated: after it has said it has nothing ready, the stream is polled again only when it
    // wakes the task, not each time the task runs (once per write, or when the socket wakes).
    let mut body = GatedStream::new(body);
    let mut ended = false;
    while !ended {
        let step = std::future::poll_fn(|cx| {
            match wire.claim() {
                Claim::Gone => return Poll::Ready(Step::Gone),
                Claim::Tail(tail) => return Poll::Ready(Step::Tail(tail)),
                Claim::Claimed => {}
            }
            // Every frame ready now, up to a bound, to go in one write.
            while chunks.len() < MAX_CHUNKS_PER_WRITE {
                match body.poll_next_gated(cx) {
                    Poll::Ready(Some(chunk)) => chunks.push(chunk),
                    Poll::Ready(None) => {
                        ended = true;
                        return Poll::Ready(Step::Write);
                    }
                    Poll::Pending => break,
                }
            }
            if !chunks.is_empty() {
                return Poll::Ready(Step::Write);
            }
            // Nothing in hand: the feed may write to the socket until the writer takes
            // frames again.
            wire.lend(cx.waker());
            // The client leaving is checked when there is nothing to write: with frames to
            // write, a departed client shows as a failed write (or, when the socket is full,
            // in `Out::send`'s race).
            if out.gone.poll_gated(cx).is_ready() {
                Poll::Ready(Step::Gone)
            } else {
                Poll::Pending
            }
        })
        .await;
        match step {
            Step::Gone => return,
            Step::Tail(tail) => {
                if out.send(&mut [IoSlice::new(&tail)]).await.is_err() {
                    return;
                }
                continue;
            }
            Step::Write => {}
        }
        chunks.retain(|c| !c.is_empty());
        let sizes = SizeLines::of(&chunks, chunked);
        let pieces = || wire_pieces(&chunks, &sizes, chunked);
        let total: usize = pieces().map(<[u8]>::len).sum();
        let written = match write_now(socket, pieces()) {
            Ok(written) => written,
            Err(_) => return,
        };
        if written < total {
            let mut slices: Vec<IoSlice<'_>> = pieces().map(IoSlice::new).collect();
            let mut rest = &mut slices[..];
            IoSlice::advance_slices(&mut rest, written);
            if out.send(rest).await.is_err() {
                return;
            }
        }
        chunks.clear();
    }
    drop(body);
    if chunked && out.send(&mut [IoSlice::new(b"0\r\n\r\n")]).await.is_err() {
        return;
    }
    close_gracefully(socket).await;
}

/// The size lines of a body's frames, when they go as chunks; one without an allocation.
enum SizeLines {
    None,
    One([SizeLine; 1]),
    Many(Vec<SizeLine>),
}

impl SizeLines {
    fn of(frames: &[Bytes], chunked: bool) -> Self {
        match frames {
            _ if !chunked => Self::None,
            [frame] => Self::One([SizeLine::new(frame.len())]),
            frames => Self::Many(frames.iter().map(|f| SizeLine::new(f.len())).collect()),
        }
    }

    fn get(&self, i: usize) -> &[u8] {
        match self {
            Self::None => b"",
            Self::One(one) => one[i].as_bytes(),
            Self::Many(many) => many[i].as_bytes(),
        }
    }
}

/// `frames` as the pieces that go on the wire: each one a chunk on HTTP/1.1.
fn wire_pieces<'a>(
    frames: &'a [Bytes],
    sizes: &'a SizeLines,
    chunked: bool,
) -> impl Iterator<Item = &'a [u8]> + Clone {
    frames.iter().enumerate().flat_map(move |(i, frame)| {
        let crlf: &[u8] = if chunked { b"\r\n" } else { b"" };
        [sizes.get(i), &frame[..], crlf]
            .into_iter()
            .filter(|piece| !piece.is_empty())
    })
}

/// Frames up to this size (with their chunk framing) are copied into one buffer to be written.
const COALESCE_BYTES: usize = 2048;

/// Writes as much of `pieces` as the socket takes now, without waiting: the bytes written.
/// Most writes are one small frame, sent with one `write` of a copy on the stack (no iovec per
/// piece, no allocation); larger ones go by `writev`.
fn write_now<'p>(
    socket: &TcpStream,
    pieces: impl Iterator<Item = &'p [u8]> + Clone,
) -> io::Result<usize> {
    let mut buf = [0u8; COALESCE_BYTES];
    let mut len = 0;
    for piece in pieces.clone() {
        let Some(dst) = buf.get_mut(len..len + piece.len()) else {
            return write_vectored_now(socket, pieces);
        };
        dst.copy_from_slice(piece);
        len += piece.len();
    }
    let mut at = 0;
    while at < len {
        match socket.try_write(&buf[at..len]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

fn write_vectored_now<'p>(
    socket: &TcpStream,
    pieces: impl Iterator<Item = &'p [u8]>,
) -> io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = pieces.map(IoSlice::new).collect();
    let mut rest = &mut slices[..];
    let mut at = 0;
    while !rest.is_empty() {
        match socket.try_write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                at += n;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Sends our end-of-file and waits a moment for the client's, so that bytes it sent and we
/// did not read do not turn our close into a reset that could destroy the stream's tail.
async fn close_gracefully(socket: &TcpStream) {
    let fd = socket2::SockRef::from(socket);
    if fd.shutdown(std::net::Shutdown::Write).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client_gone(socket)).await;
    }
}

/// Resolves when the client has gone: end-of-file, a reset or any error. Whatever it sends
/// meanwhile (nothing is expected after a stream request) is read and discarded, so neither a
/// stray byte nor a pipelined request can hide its leaving.
async fn client_gone(socket: &TcpStream) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let mut discard = [0u8; 256];
        match socket.try_read(&mut discard) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The write side of a detached stream.
struct Out<'a> {
    socket: &'a TcpStream,
    limits: Limits<'a>,
    ends: &'a StreamEnds,
    /// [`client_gone`] on this stream's socket.
    gone: Gated<BoxFuture<'a, ()>>,
}

impl Out<'_> {
    /// Writes all of `slices`; while the socket's buffer is full, races the wait against
    /// everything that ends the stream.
    async fn send(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<(), Stop> {
        let mut ends: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        // When the socket last took bytes, read from the clock only once a write blocks.
        let mut progress: Option<Instant> = None;
        while !slices.is_empty() {
            match self.socket.try_write_vectored(slices) {
                Ok(0) => return Err(Stop::Gone),
                Ok(n) => {
                    IoSlice::advance_slices(&mut slices, n);
                    progress = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ends = ends.get_or_insert_with(|| Box::pin(self.ends.clone().reached()));
                    let progress = *progress.get_or_insert_with(Instant::now);
                    tokio::select! {
                        biased;
                        ready = self.socket.writable() => ready.map_err(|_| Stop::Gone)?,
                        () = &mut self.gone => return Err(Stop::Gone),
                        () = self.limits.shutdown.cancelled() => return Err(Stop::Cut),
                        () = ends.as_mut() => return Err(Stop::Cut),
                        () = tokio::time::sleep_until(progress + self.limits.stall) => {
                            tracing::info!("a stream's client read nothing for the stall limit; ending it");
                            self.limits.stalled.inc();
                            return Err(Stop::Cut);
                        }
                    }
                }
                Err(_) => return Err(Stop::Gone),
            }
        }
        Ok(())
    }
}

/// A chunk's size line, `<len in hex>\r\n`.
struct SizeLine {
    bytes: [u8; 18],
    len: usize,
}

impl SizeLine {
    fn new(mut n: usize) -> Self {
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let hex = &digits[at..];
        let mut bytes = [0u8; 18];
        bytes[..hex.len()].copy_from_slice(hex);
        bytes[hex.len()..hex.len() + 2].copy_from_slice(b"\r\n");
        Self {
            bytes,
            len: hex.len() + 2,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(all(test, buildlogs_loom))]
pub(crate) mod model;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wire_takes_small_puts_as_chunks_once_its_writer_is_idle_and_refuses_large_ones() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        server.writable().await.unwrap();
        let wire = Wire::new(Arc::new(server), true, Counter::default());
        let small = |text: &'static str| [Bytes::from_static(text.as_bytes())];
        assert!(
            !wire.try_put(&small("early")),
            "busy until the writer is idle"
        );
        assert_eq!(wire.claim(), Claim::Claimed);
        wire.lend(Waker::noop());
        assert!(wire.try_put(&small("data: x\n\n")));
        let large = [Bytes::from(vec![b'y'; MAX_PUT_BYTES])];
        assert!(!wire.try_put(&large), "a burst is the writer's");
        assert!(wire.try_put(&small("b")));
        let expected = b"9\r\ndata: x\n\n\r\n1\r\nb\r\n";
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected, "nothing of the refused puts went out");
    }

    #[test]
    fn size_lines_are_lowercase_hex() {
        for n in [0usize, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, usize::MAX] {
            assert_eq!(SizeLine::new(n).as_bytes(), format!("{n:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn detached_heads_say_how_the_body_ends() {
        let resp = || {
            Response::builder()
                .content_type("text/event-stream")
                .header("cache-control", "no-cache")
                .header("content-length", "12")
                .header("connection", "keep-alive")
                .body(())
        };
        let head = String::from_utf8(encode_head(&resp(), true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncache-control: no-cache\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("keep-alive"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(
            head.ends_with("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{head}"
        );
        let head = String::from_utf8(encode_head(&resp(), false)).unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.ends_with("\r\nconnection: close\r\n\r\n"), "{head}");
    }
}
