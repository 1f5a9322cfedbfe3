//! The socket a connection is served through, and what the connection's requests can learn of
//! it: whether hyper has flushed every byte of the responses before (so a stream may leave
//! hyper without cutting one short), write progress (and how long a write has been blocked),
//! and how many requests are in flight.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one connection's requests share about its socket.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Times hyper flushed the socket. hyper flushes only once its write buffer is empty, so a
    /// flush after a response's body was let go means every byte of it reached the socket.
    flushes: AtomicU64,
    /// `flushes` when the latest response body was let go (+1; 0: no response yet).
    last_body_done: AtomicU64,
    /// Bytes written to the socket so far.
    written: AtomicU64,
    /// Requests whose response has not been let go yet.
    in_flight: AtomicUsize,
    /// When `in_flight` last dropped to zero, in ms since `born`.
    idle_since_ms: AtomicU64,
    /// When a write last found the socket full, in ms since `born` plus one; 0 once a write
    /// went through since (or none ever blocked).
    blocked_since_ms: AtomicU64,
    /// Woken when a write blocks.
    blocked: Notify,
    born: Instant,
    /// Woken on every flush.
    flushed: Notify,
}

impl ConnState {
    pub(super) fn new() -> Self {
        Self {
            flushes: AtomicU64::new(0),
            last_body_done: AtomicU64::new(0),
            written: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            blocked_since_ms: AtomicU64::new(0),
            blocked: Notify::new(),
            born: Instant::now(),
            flushed: Notify::new(),
        }
    }

    /// A request started: its response is in flight until [`InFlight`] is dropped.
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Requests whose response has not been let go yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether no request has been in flight for `idle`.
    pub(super) fn idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.born.elapsed()
                >= Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + idle
    }

    /// Resolves once a write has found the socket full for `stall` with nothing taken since:
    /// the client reads nothing of what it asked for.
    pub(super) async fn write_stalled(&self, stall: Duration) {
        loop {
            let blocked = self.blocked.notified();
            tokio::pin!(blocked);
            blocked.as_mut().enable();
            let since = self.blocked_since_ms.load(Ordering::Acquire);
            if since == 0 {
                blocked.await;
                continue;
            }
            let deadline = self.born + Duration::from_millis(since - 1) + stall;
            tokio::time::sleep_until(deadline).await;
            if self.blocked_since_ms.load(Ordering::Acquire) == since {
                return;
            }
        }
    }

    fn write_blocked(&self) {
        if self.blocked_since_ms.load(Ordering::Relaxed) == 0 {
            let now = self.born.elapsed().as_millis() as u64 + 1;
            self.blocked_since_ms.store(now, Ordering::Release);
            self.blocked.notify_waiters();
        }
    }

    /// Whether every earlier response on this connection has reached the socket.
    fn flushed_all(&self) -> bool {
        let done = self.last_body_done.load(Ordering::Acquire);
        done == 0 || self.flushes.load(Ordering::Acquire) >= done
    }

    /// Waits until every earlier response has reached the socket. False when the client read
    /// nothing for `stall` meanwhile (the connection should be closed).
    pub(super) async fn until_flushed(&self, stall: Duration) -> bool {
        let mut progress = self.written.load(Ordering::Acquire);
        loop {
            let notified = self.flushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flushed_all() {
                return true;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(stall) => {
                    let now = self.written.load(Ordering::Acquire);
                    if now == progress {
                        return false;
                    }
                    progress = now;
                }
            }
        }
    }
}

/// A request in flight; dropped when hyper lets its response (body included) go.
#[derive(Debug)]
pub(super) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        // hyper drops a body after encoding its end: any flush from now on carries all of it.
        state
            .last_body_done
            .store(state.flushes.load(Ordering::Acquire) + 1, Ordering::Release);
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            state
                .idle_since_ms
                .store(state.born.elapsed().as_millis() as u64, Ordering::Release);
        }
    }
}

/// A TCP stream that hyper serves and the connection task may take over.
pub(super) struct Socket {
    stream: Arc<TcpStream>,
    state: Arc<ConnState>,
}

impl Socket {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream: Arc::new(stream),
            state: Arc::new(ConnState::new()),
        }
    }

    /// The socket itself, for writing a stream that has left hyper.
    pub(super) fn tcp(&self) -> Arc<TcpStream> {
        self.stream.clone()
    }

    pub(super) fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }

    /// Whether the client opens with the HTTP/2 preface, looked at without consuming it, so
    /// hyper reads the request from the socket itself (a rewinding reader would double its
    /// read buffer). `false` for anything else, including a client that closed at once.
    pub(super) async fn speaks_h2(&self) -> io::Result<bool> {
        let mut head = [0u8; H2_PREFACE.len()];
        loop {
            let n = self.stream.peek(&mut head).await?;
            if n == 0 || head[..n] != H2_PREFACE[..n] {
                return Ok(false);
            }
            if n == H2_PREFACE.len() {
                return Ok(true);
            }
            // Part of the preface so far: the socket stays readable, so wait a little
            // instead of peeking in a tight loop. The caller bounds the whole wait.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            // Into the unfilled part as it is: zeroing hyper's 8 KB read buffer first would
            // make every page of it resident on every connection.
            match self.stream.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Socket {
    fn wrote(&self, result: &io::Result<usize>) {
        if let Ok(n) = result {
            self.state.written.fetch_add(*n as u64, Ordering::AcqRel);
            if self.state.blocked_since_ms.load(Ordering::Relaxed) != 0 {
                self.state.blocked_since_ms.store(0, Ordering::Release);
            }
        }
    }

    /// Whether the socket can take a write now; records it as blocked when not.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let ready = self.stream.poll_write_ready(cx);
        if ready.is_pending() {
            self.state.write_blocked();
        }
        ready
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_writable(cx))?;
            match self.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => {
                    self.wrote(&result);
                    return Poll::Ready(result);
                }
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_writable(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => {
                    self.wrote(&result);
                    return Poll::Ready(result);
                }
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing of ours to flush: reaching here means hyper's own buffer is empty.
        self.state.flushes.fetch_add(1, Ordering::AcqRel);
        self.state.flushed.notify_waiters();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Dropping the last handle closes the socket; a half-close is not needed by HTTP/1 here.
        Poll::Ready(Ok(()))
    }
}
