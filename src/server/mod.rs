//! The HTTP server and the connection edge: accepts TCP connections, serves each with hyper
//! (HTTP/1.1 and 1.0, or HTTP/2 with prior knowledge) in front of the poem endpoint, ends
//! every event stream on every path, and drains connections at shutdown. Nothing above this
//! module knows about sockets: an event stream is a response carrying an
//! [`EventStream`] (its frames, which a detached stream's writer takes straight from the
//! engine, and its [`StreamEnds`](crate::outlet::StreamEnds)), and the rest is decided here.
//!
//! Which event streams leave hyper, and why: an idle stream must cost little memory, and
//! hyper keeps an 8 KB read buffer and an 8 KB write buffer per HTTP/1 connection for as long
//! as it serves it. So a `GET` stream on HTTP/1.1 or HTTP/1.0 is *detached*: the connection
//! task drops hyper's connection and writes the head and the body to the socket itself
//! ([`socket_writer::write_detached`]). It detaches only once hyper has flushed every byte of the
//! responses before it on the connection (pipelined requests), waiting for that if it must, so
//! no earlier response is ever cut short; what the client sends after the stream request is
//! read and discarded. A `HEAD` stays with hyper (it has no body), and so does HTTP/2, where a
//! connection carries many streams. There every response, an event stream or not, runs under
//! a watchdog ([`watch`]) that resets it (`RST_STREAM`) once it has waited for the peer's
//! flow-control window for the stall limit, and an event stream also at its ends while it
//! waits; a connection holding nothing but such responses is closed with GOAWAY.
//!
//! The protocol is sniffed with a non-consuming `peek` (a rewinding reader, as hyper-util's
//! auto builder uses, would double hyper's read buffer), and hyper never reads while a
//! response is in flight.

mod io;
mod socket_writer;
mod watch;

use std::{
    convert::Infallible,
    io as stdio,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{StreamExt, future::BoxFuture};
use http_body_util::combinators::BoxBody;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
};
use poem::{
    Addr, Response,
    endpoint::DynEndpoint,
    http::{Method, StatusCode, Version, header, uri::Scheme},
    web::{LocalAddr, RemoteAddr},
};
use prometheus_client::metrics::counter::Counter;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    io::{ConnState, InFlight, Socket},
    socket_writer::{Detached, Limits, write_detached},
    watch::{H2Conn, Shaper, WatchCounters, WatchExec},
};
use crate::outlet::EventStream;

/// Largest request head (HTTP/1: 431 past it) or header list (HTTP/2).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2 pings an otherwise quiet connection this often, and closes it when a ping goes
/// unanswered this long: dead peers go away.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The app's endpoint, type-erased once for every connection.
pub type Endpoint = Arc<dyn DynEndpoint<Output = Response>>;

/// How connections run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// An event stream whose client reads nothing for this long, while there is data to send,
    /// is ended (`STREAM_STALL_SECS`).
    pub stall_limit: Duration,
    /// A connection with no request in flight for this long is closed, and so is one whose
    /// request head or header block takes longer (`IDLE_TIMEOUT_SECS`): a new connection's
    /// first bytes, hyper's header timeout on HTTP/1 (which also closes a keep-alive connection
    /// waiting that long for its next request), the idle check on HTTP/2.
    pub idle_timeout: Duration,
    /// Counts the event streams ended by the stall limit
    /// (`buildlogs_stalled_streams_disconnected_total`).
    pub stalled: Counter,
    /// Counts the feed's writes to a detached stream's socket that it took only part of
    /// (`buildlogs_partial_puts_total`).
    pub partial_puts: Counter,
    /// Counts the HTTP/2 responses, of any kind, reset by the stall limit
    /// (`buildlogs_stalled_responses_reset_total`).
    pub reset_responses: Counter,
    /// Counts the HTTP/2 connections closed because every response on them stalled
    /// (`buildlogs_stalled_connections_closed_total`).
    pub stalled_connections: Counter,
    /// `SO_SNDBUF` of a detached event stream's socket (`STREAM_SEND_BUFFER`); `None`: the
    /// kernel's autotuning.
    pub stream_send_buffer: Option<usize>,
}

/// Most streams a client may have open at once on one HTTP/2 connection. Each stalled one
/// costs the server a few KB (its state in h2 and hyper, its watchdog task) plus what its
/// response holds, for at most the stall limit; 100 is what browsers and proxies expect of
/// servers (nginx and Apache advertise 100–128), and well above the 50 streams a user may
/// hold.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// What h2 may buffer for one stream beyond what the socket took (hyper's default: 400 KB).
/// Bodies are handed over in pieces of at most [`watch::MAX_PIECE`] once the peer's window
/// has room, so this only bounds a peer that opens its window and then stops reading.
const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// The protocol builders: HTTP/1 configured once and shared by every connection; HTTP/2 per
/// connection, since its executor is the connection's own (see [`watch`]).
struct Protocols {
    http1: http1::Builder,
}

impl Protocols {
    fn http2(exec: WatchExec) -> http2::Builder<WatchExec> {
        let mut http2 = http2::Builder::new(exec);
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        http2
    }

    fn new(settings: &Settings) -> Self {
        let mut http1 = http1::Builder::new();
        // The timer bounds how long a request head may take (slow-loris) and how long a
        // keep-alive connection may sit between requests. Half-close: never read while a
        // response is in flight (see the module docs).
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(settings.idle_timeout)
            .half_close(true)
            .max_buf_size(MAX_HEAD_BYTES);
        Self { http1 }
    }
}

/// Serves `endpoint` on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// every connection finish its current response (streams end on the same signal) and returns
/// once all have closed or `grace` has passed.
pub async fn run(
    listener: TcpListener,
    endpoint: Endpoint,
    settings: Settings,
    shutdown: CancellationToken,
    grace: Duration,
) -> stdio::Result<()> {
    let local = listener.local_addr()?;
    let protocols = Arc::new(Protocols::new(&settings));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine, so keep going after a pause.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            endpoint: endpoint.clone(),
            local: LocalAddr(Addr::SocketAddr(local)),
            remote: RemoteAddr(Addr::SocketAddr(peer)),
            settings: settings.clone(),
            shutdown: shutdown.clone(),
        };
        tracker.spawn(conn.serve(Socket::new(stream), protocols.clone()));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            connections = tracker.len(),
            "grace period over with connections still open; closing them"
        );
    }
    Ok(())
}

/// What every request of one connection shares.
#[derive(Clone)]
struct Connection {
    endpoint: Endpoint,
    local: LocalAddr,
    remote: RemoteAddr,
    settings: Settings,
    shutdown: CancellationToken,
}

impl Connection {
    async fn serve(self, io: Socket, protocols: Arc<Protocols>) {
        let h2 = tokio::select! {
            () = self.shutdown.cancelled() => return,
            sniffed = tokio::time::timeout(self.settings.idle_timeout, io.speaks_h2()) => match sniffed {
                Ok(Ok(h2)) => h2,
                // Silent past the timeout, or the socket failed: nothing to answer.
                Err(_) | Ok(Err(_)) => return,
            },
        };
        let shutdown = self.shutdown.clone();
        let limits = self.settings.clone();
        let state = io.state();
        if h2 {
            let watch = H2Conn::new(
                state.clone(),
                limits.stall_limit,
                shutdown.clone(),
                WatchCounters {
                    stalled_streams: limits.stalled.clone(),
                    reset_responses: limits.reset_responses.clone(),
                    closed_connections: limits.stalled_connections.clone(),
                },
            );
            let service = Service {
                conn: self,
                state: state.clone(),
                detach: None,
            };
            // Boxed: an HTTP/2 connection's state is large and rare here, and inline it would
            // size every HTTP/1 connection's task too.
            let conn = Box::pin(
                Protocols::http2(WatchExec(watch.clone()))
                    .serve_connection(TokioIo::new(io), service),
            );
            drive_h2(conn, &state, &watch, limits.idle_timeout, &shutdown).await;
            return;
        }
        let socket = io.tcp();
        let (detach, detached) = oneshot::channel();
        let service = Service {
            conn: self,
            state: state.clone(),
            detach: Some(Arc::new(Mutex::new(Some(detach)))),
        };
        // Boxed, so that dropping it on detach returns its buffers and state to the allocator.
        let conn = Box::pin(protocols.http1.serve_connection(TokioIo::new(io), service));
        let handover = {
            let run = drive(conn, &state, limits.stall_limit, &shutdown);
            tokio::pin!(run);
            tokio::select! {
                biased;
                // The sender goes with the service, when hyper is done with the connection:
                // then `run` has ended too.
                Ok(handover) = detached => handover,
                () = &mut run => return,
            }
        };
        if let Handover::Stream(detached) = handover {
            if let Some(bytes) = limits.stream_send_buffer
                && let Err(err) = socket2::SockRef::from(&*socket).set_send_buffer_size(bytes)
            {
                tracing::debug!(error = %err, "could not bound a stream's send buffer");
            }
            let limits = Limits {
                shutdown: &shutdown,
                stall: limits.stall_limit,
                stalled: &limits.stalled,
                partial_puts: &limits.partial_puts,
            };
            write_detached(socket, detached, limits).await;
        }
    }
}

/// What a connection's service hands its connection task, instead of giving hyper a response.
enum Handover {
    /// An event stream to write ourselves.
    Stream(Detached),
    /// Close the connection: the client read nothing of an earlier response for the stall
    /// limit while a stream waited to start.
    Close,
}

/// Where a connection's [`Service`] hands a [`Handover`] to the connection task: once, by
/// whichever request takes the sender.
type DetachSlot = Arc<Mutex<Option<oneshot::Sender<Handover>>>>;

/// Hands each request of one connection to the poem endpoint.
#[derive(Clone)]
struct Service {
    conn: Connection,
    state: Arc<ConnState>,
    /// On HTTP/1 connections: where a detached event stream is handed to the connection task.
    detach: Option<DetachSlot>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.state.request();
        if req.version() < Version::HTTP_2 && head_size(&req) > MAX_HEAD_BYTES {
            // hyper bounds what it buffers, but may take a head a little past the bound in
            // one read: refuse those exactly as it refuses longer ones.
            let resp = hyper::Response::builder()
                .status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                .header(header::CONNECTION, "close")
                .body(BoxBody::default())
                .expect("a static response");
            return Box::pin(async move { Ok(into_hyper_parts(resp, in_flight, None)) });
        }
        let version = req.version();
        let detach = self.detach.clone().filter(|_| {
            req.method() == Method::GET && matches!(version, Version::HTTP_11 | Version::HTTP_10)
        });
        let req = poem::Request::from((
            req,
            self.conn.local.clone(),
            self.conn.remote.clone(),
            Scheme::HTTP,
        ));
        let conn = self.conn.clone();
        let state = self.state.clone();
        Box::pin(async move {
            // Polled inside the HTTP/2 stream's watchdog, if there is one.
            let watch = watch::current();
            let mut resp = DynEndpoint::call(&*conn.endpoint, req)
                .await
                .unwrap_or_else(|err| err.into_response());
            if let Some(EventStream {
                frames,
                ends,
                outlet,
            }) = resp.extensions_mut().remove()
            {
                if let Some(slot) = detach
                    && let Some(frames) = frames.take()
                {
                    // Every earlier response must reach the client whole before the stream
                    // leaves hyper: wait for hyper's flush of them.
                    let handover = if state.until_flushed(conn.settings.stall_limit).await {
                        Handover::Stream(Detached::new(&resp, version, frames, ends, outlet))
                    } else {
                        Handover::Close
                    };
                    let sender = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(sender) = sender {
                        let _ = sender.send(handover);
                    }
                    // hyper never sees this response: the connection task drops the connection.
                    return std::future::pending().await;
                }
                // HTTP/2: the frames are the body; the watchdog applies the ends.
                if let Some(watch) = &watch
                    && let Some(frames) = frames.take()
                {
                    watch.end_with(ends);
                    resp.set_body(poem::Body::from_bytes_stream(
                        frames.map(Ok::<_, stdio::Error>),
                    ));
                }
            }
            Ok(into_hyper(resp, in_flight, watch.map(Shaper::new)))
        })
    }
}

/// The response for hyper, its body holding `in_flight` until hyper drops it (and, on
/// HTTP/2, paced for its watchdog by `shaper`).
fn into_hyper(
    resp: Response,
    in_flight: InFlight,
    shaper: Option<Shaper>,
) -> hyper::Response<Tracked> {
    into_hyper_parts(resp.into(), in_flight, shaper)
}

fn into_hyper_parts(
    resp: hyper::Response<BoxBody<Bytes, stdio::Error>>,
    in_flight: InFlight,
    shaper: Option<Shaper>,
) -> hyper::Response<Tracked> {
    resp.map(|body| Tracked {
        body,
        _in_flight: in_flight,
        shaper,
    })
}

/// The size of an HTTP/1 request's head as it came: request line, header lines, blank line.
fn head_size<B>(req: &hyper::Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields + 2
}

/// A response body that keeps its request in flight until hyper lets it go (after writing its
/// end): what tells a later stream request that every earlier response was written, and an
/// HTTP/2 connection that it is idle. On HTTP/2 it also reports to the stream's watchdog.
struct Tracked {
    body: BoxBody<Bytes, stdio::Error>,
    _in_flight: InFlight,
    shaper: Option<Shaper>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = stdio::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, stdio::Error>>> {
        let this = &mut *self;
        match &mut this.shaper {
            Some(shaper) => shaper.poll_frame(Pin::new(&mut this.body), cx),
            None => Pin::new(&mut this.body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        let ended = self.body.is_end_stream();
        self.shaper
            .as_ref()
            .map_or(ended, |shaper| shaper.is_end_stream(ended))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let hint = self.body.size_hint();
        let Some(in_hand) = self.shaper.as_ref().map(Shaper::in_hand) else {
            return hint;
        };
        let mut shaped = hyper::body::SizeHint::new();
        shaped.set_lower(hint.lower() + in_hand);
        if let Some(upper) = hint.upper() {
            shaped.set_upper(upper + in_hand);
        }
        shaped
    }
}

/// Runs an HTTP/1 connection to its end: closed once its client has taken nothing of a
/// response for `stall` (hyper has no such limit, and the client would hold the connection and
/// the response for as long as it likes); at shutdown, lets it finish the responses under way
/// and close.
async fn drive<C>(
    mut conn: Pin<Box<C>>,
    state: &ConnState,
    stall: Duration,
    shutdown: &CancellationToken,
) where
    C: GracefulConnection<Error: std::fmt::Display>,
{
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = state.write_stalled(stall) => {
            tracing::debug!("closing an HTTP/1 connection whose client read nothing for the stall limit");
            Ok(())
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        // A client that hung up or sent garbage: routine, not worth more than a debug line.
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Runs an HTTP/2 connection to its end: closed (GOAWAY) once no request has been in flight
/// for `idle`, which also bounds a header block that never completes, and once every response
/// on it has stalled ([`watch`]); at shutdown, lets it finish the responses under way and
/// close.
async fn drive_h2<C>(
    mut conn: Pin<Box<C>>,
    state: &ConnState,
    watch: &H2Conn,
    idle: Duration,
    shutdown: &CancellationToken,
) where
    C: GracefulConnection<Error: std::fmt::Display>,
{
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        let closing = tokio::select! {
            result = conn.as_mut() => break result,
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            () = watch.stalled() => "closing an HTTP/2 connection whose every response stalled",
            _ = idle_check.tick() => {
                if !state.idle_for(idle) {
                    continue;
                }
                "closing an idle HTTP/2 connection"
            }
        };
        tracing::debug!("{closing}");
        conn.as_mut().graceful_shutdown();
        // The GOAWAY is sent (and the stalled streams' resets); a peer that holds the
        // connection open regardless (a header block it never finishes, a window it never
        // opens) is not waited for long.
        break match tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        };
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}
