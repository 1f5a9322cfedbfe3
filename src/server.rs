//! The HTTP server: accepts TCP connections, serves each with hyper (HTTP/1.1, or HTTP/2 with
//! prior knowledge) in front of the poem endpoint, and drains them at shutdown.
//!
//! poem's own `Server` serves through hyper-util's protocol-sniffing builder, which reads the
//! first bytes into a rewinding wrapper; hyper's next read then finds its 8 KB buffer short and
//! doubles it, on every connection. Here the protocol is sniffed with a non-consuming `peek`, and
//! hyper never reads while a response is in flight (the [`crate::conn`] watcher notices a client
//! leaving instead), so an idle stream's connection keeps one read and one write buffer, each
//! resident only as far as it was written. The README's performance section has the numbers.

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::future::BoxFuture;
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
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::net::TcpListener;
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
    let service = Service {
        endpoint,
        local: LocalAddr(Addr::SocketAddr(local)),
        remote: RemoteAddr(Addr::SocketAddr(peer)),
    };
    let io = TokioIo::new(io);
    if h2 {
        // Boxed: an HTTP/2 connection's state is large and rare here, and inline it would
        // size every HTTP/1 connection's task too.
        Box::pin(drive(
            protocols.http2.serve_connection(io, service),
            shutdown,
        ))
        .await;
    } else {
        drive(protocols.http1.serve_connection(io, service), shutdown).await;
    }
}

/// Hands each request of one connection to the poem endpoint.
#[derive(Clone)]
struct Service {
    endpoint: Endpoint,
    local: LocalAddr,
    remote: RemoteAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<BoxBody<Bytes, io::Error>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let req = poem::Request::from((req, self.local.clone(), self.remote.clone(), Scheme::HTTP));
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let resp = DynEndpoint::call(&*endpoint, req)
                .await
                .unwrap_or_else(|err| err.into_response());
            Ok(resp.into())
        })
    }
}

/// Runs a connection to its end; at shutdown, lets it finish the responses under way and close.
async fn drive<C>(conn: C, shutdown: CancellationToken)
where
    C: GracefulConnection<Error: std::fmt::Display>,
{
    tokio::pin!(conn);
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
