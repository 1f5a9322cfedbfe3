//! The HTTP server: accepts TCP connections, serves each with hyper (HTTP/1.1, or HTTP/2 with
//! prior knowledge) in front of the poem endpoint, and drains them at shutdown.
//!
//! Why not poem's own `Server`: an idle event stream must cost little memory, and hyper keeps
//! an 8 KB read buffer and an 8 KB write buffer per HTTP/1 connection for as long as it serves
//! it. So an event stream (a [`Detachable`] response) on HTTP/1.1 leaves hyper once the
//! endpoint has produced it: the connection task drops hyper's connection and writes the head
//! and the chunked body to the socket itself. Everything else (other responses, HTTP/2, HEAD,
//! HTTP/1.0) stays with hyper. The protocol is sniffed with a non-consuming `peek` (a rewinding
//! reader, as hyper-util's auto builder uses, would double hyper's read buffer), and hyper never
//! reads while a response is in flight: the [`crate::conn`] watcher notices a client leaving.

use std::{
    convert::Infallible,
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, future::BoxFuture, stream::BoxStream};
use http_body_util::combinators::BoxBody;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
};
use poem::{
    Addr, Response,
    endpoint::DynEndpoint,
    http::{Method, Version, uri::Scheme},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::conn::{Connections, SharedTcp};

/// How long a new connection may take to send its first bytes; hyper then bounds the rest of
/// the request head (and every later one on a keep-alive connection) with its own 30 s timeout.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// The app's endpoint, type-erased once for every connection.
pub type Endpoint = Arc<dyn DynEndpoint<Output = Response>>;

/// Both protocol builders, configured once and shared by every connection.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Self {
        let mut http1 = http1::Builder::new();
        // The timer bounds how long a request head may take (slow-loris) and how long a
        // keep-alive connection may sit between requests. Half-close: never read while a
        // response is in flight (see the module docs).
        http1.timer(TokioTimer::new()).half_close(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Self { http1, http2 }
    }
}

/// Serves `endpoint` on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// every connection finish its current response (streams end on the same signal) and returns
/// once all have closed or `grace` has passed.
pub async fn run(
    listener: TcpListener,
    endpoint: Endpoint,
    connections: Connections,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let protocols = Arc::new(Protocols::new());
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
        let io = connections.watch(stream, peer);
        tracker.spawn(serve_connection(
            io,
            local,
            peer,
            endpoint.clone(),
            protocols.clone(),
            shutdown.clone(),
        ));
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

async fn serve_connection(
    io: SharedTcp,
    local: SocketAddr,
    peer: SocketAddr,
    endpoint: Endpoint,
    protocols: Arc<Protocols>,
    shutdown: CancellationToken,
) {
    let h2 = tokio::select! {
        () = shutdown.cancelled() => return,
        sniffed = tokio::time::timeout(FIRST_BYTES_TIMEOUT, io.speaks_h2()) => match sniffed {
            Ok(Ok(h2)) => h2,
            // Silent past the timeout, or the socket failed: nothing to answer.
            Err(_) | Ok(Err(_)) => return,
        },
    };
    let mut service = Service {
        endpoint,
        local: LocalAddr(Addr::SocketAddr(local)),
        remote: RemoteAddr(Addr::SocketAddr(peer)),
        detach: None,
    };
    if h2 {
        // Boxed: an HTTP/2 connection's state is large and rare here, and inline it would
        // size every HTTP/1 connection's task too.
        let conn = Box::pin(protocols.http2.serve_connection(TokioIo::new(io), service));
        drive(conn, shutdown).await;
        return;
    }
    let socket = io.socket();
    let slot = Arc::new(DetachSlot::default());
    service.detach = Some(slot.clone());
    // Boxed, so that dropping it on detach returns its buffers and state to the allocator.
    let conn = Box::pin(protocols.http1.serve_connection(TokioIo::new(io), service));
    let detached = {
        let run = drive(conn, shutdown);
        tokio::pin!(run);
        tokio::select! {
            biased;
            detached = slot.taken() => detached,
            () = &mut run => return,
        }
    };
    drop(slot);
    write_detached(&socket, detached).await;
}

/// Marks a response whose body may leave hyper: on an HTTP/1.1 connection the server writes
/// the head and then the body's chunks straight to the socket, and drops hyper's connection
/// state (its 8 KB read and write buffers among it) for the rest of the response. Meant for
/// responses that last as long as the connection: an event stream. The connection closes when
/// the body ends; anything the client pipelined behind the request is not answered.
#[derive(Clone, Copy, Debug)]
pub struct Detachable;

/// A response taken out of hyper: its encoded head and its body.
struct Detached {
    head: Vec<u8>,
    body: BoxStream<'static, io::Result<Bytes>>,
}

/// Where a connection's [`Service`] leaves a [`Detached`] response for the connection task.
#[derive(Default)]
struct DetachSlot {
    response: Mutex<Option<Detached>>,
    ready: Notify,
}

impl DetachSlot {
    fn put(&self, detached: Detached) {
        *self.response.lock().unwrap_or_else(|p| p.into_inner()) = Some(detached);
        self.ready.notify_one();
    }

    async fn taken(&self) -> Detached {
        loop {
            if let Some(detached) = self
                .response
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return detached;
            }
            self.ready.notified().await;
        }
    }
}

/// The HTTP/1.1 head of a detached response: its status and headers, chunked, closing.
fn encode_head(resp: &Response) -> Vec<u8> {
    let status = resp.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "date"
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
    head.extend_from_slice(b"\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    head
}

/// Most body chunks gathered into one write when several are ready at once (a catch-up).
const MAX_CHUNKS_PER_WRITE: usize = 32;

/// Writes a detached response: the head, every body chunk as it comes (chunked encoding), the
/// last chunk when the body ends; then the connection closes. Stops at the first write error
/// (the client has gone) or body error.
async fn write_detached(socket: &TcpStream, detached: Detached) {
    let Detached { head, mut body } = detached;
    if write_all(socket, &mut [IoSlice::new(&head)]).await.is_err() {
        return;
    }
    drop(head);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut sizes: Vec<SizeLine> = Vec::new();
    let mut ended = false;
    while !ended {
        match body.next().await {
            Some(Ok(first)) => chunks.push(first),
            None => break,
            // The body failed: close without the last chunk, so the client sees it cut short.
            Some(Err(_)) => return,
        }
        while chunks.len() < MAX_CHUNKS_PER_WRITE {
            match body.next().now_or_never() {
                Some(Some(Ok(more))) => chunks.push(more),
                Some(None) => {
                    ended = true;
                    break;
                }
                Some(Some(Err(_))) => return,
                None => break,
            }
        }
        chunks.retain(|c| !c.is_empty());
        sizes.clear();
        sizes.extend(chunks.iter().map(|c| SizeLine::new(c.len())));
        let mut slices = Vec::with_capacity(chunks.len() * 3);
        for (chunk, size) in chunks.iter().zip(&sizes) {
            slices.push(IoSlice::new(size.as_bytes()));
            slices.push(IoSlice::new(chunk));
            slices.push(IoSlice::new(b"\r\n"));
        }
        if write_all(socket, &mut slices).await.is_err() {
            return;
        }
        chunks.clear();
    }
    let _ = write_all(socket, &mut [IoSlice::new(b"0\r\n\r\n")]).await;
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

/// Writes all of `slices` to the socket, waiting while its send buffer is full.
async fn write_all(socket: &TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        socket.writable().await?;
        match socket.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Hands each request of one connection to the poem endpoint.
#[derive(Clone)]
struct Service {
    endpoint: Endpoint,
    local: LocalAddr,
    remote: RemoteAddr,
    /// On HTTP/1 connections: where a [`Detachable`] response is handed to the connection task.
    detach: Option<Arc<DetachSlot>>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<BoxBody<Bytes, io::Error>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        // Only a GET over HTTP/1.1 may be detached: its response is chunked and has a body.
        let detach = self
            .detach
            .clone()
            .filter(|_| req.method() == Method::GET && req.version() == Version::HTTP_11);
        let req = poem::Request::from((req, self.local.clone(), self.remote.clone(), Scheme::HTTP));
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let resp = DynEndpoint::call(&*endpoint, req)
                .await
                .unwrap_or_else(|err| err.into_response());
            if let Some(slot) = detach
                && resp.extensions().get::<Detachable>().is_some()
            {
                let head = encode_head(&resp);
                let body = resp.into_body().into_bytes_stream().boxed();
                slot.put(Detached { head, body });
                // hyper never sees this response: the connection task drops the connection.
                return std::future::pending().await;
            }
            Ok(resp.into())
        })
    }
}

/// Runs a connection to its end; at shutdown, lets it finish the responses under way and close.
async fn drive<C>(mut conn: Pin<Box<C>>, shutdown: CancellationToken)
where
    C: GracefulConnection<Error: std::fmt::Display>,
{
    let result = tokio::select! {
        result = conn.as_mut() => result,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines_are_lowercase_hex() {
        for n in [0usize, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, usize::MAX] {
            assert_eq!(SizeLine::new(n).as_bytes(), format!("{n:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn detached_head_is_chunked_closing_and_keeps_the_headers() {
        let mut resp = Response::builder()
            .content_type("text/event-stream")
            .header("cache-control", "no-cache")
            .header("content-length", "12")
            .body(());
        resp.extensions_mut().insert(Detachable);
        let head = String::from_utf8(encode_head(&resp)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncache-control: no-cache\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(
            head.ends_with("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{head}"
        );
    }
}
