//! Connections: an acceptor that lets a stream notice its client has gone while it has nothing
//! to write.
//!
//! hyper only learns that an HTTP/1 peer went away when a write fails, so an idle SSE stream
//! would hold its slot, its feed subscription and its memory until the next heartbeat. The
//! [`WatchedAcceptor`] shares each accepted socket with a registry keyed by the peer address;
//! a stream looks its socket up and waits for end-of-file alongside its other events, at no
//! cost while the connection is quiet.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, ready},
    time::Duration,
};

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// Sockets of open connections, by peer address.
#[derive(Clone, Default)]
pub struct Connections {
    map: Arc<Mutex<HashMap<SocketAddr, Weak<TcpStream>>>>,
}

impl Connections {
    /// The socket of the connection from `peer`, if it is one of ours and still open.
    pub fn get(&self, peer: &RemoteAddr) -> Option<Weak<TcpStream>> {
        let addr = peer.as_socket_addr()?;
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }

    /// Resolves when the peer has closed its side (or reset the connection).
    pub async fn closed(socket: Weak<TcpStream>) {
        loop {
            let Some(stream) = socket.upgrade() else {
                return;
            };
            let mut byte = [0u8; 1];
            match stream.peek(&mut byte).await {
                Ok(0) | Err(_) => return,
                // The client sent something (it should not, mid-stream); hyper will read it.
                // Look again later rather than spin on a readable socket.
                Ok(_) => {
                    drop(stream);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Accepts TCP connections and registers each socket in [`Connections`].
pub struct WatchedAcceptor {
    inner: TcpAcceptor,
    connections: Connections,
}

impl WatchedAcceptor {
    pub fn new(inner: TcpAcceptor, connections: Connections) -> Self {
        Self { inner, connections }
    }
}

impl Acceptor for WatchedAcceptor {
    type Io = SharedTcp;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, local, remote, scheme) = self.inner.accept().await?;
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        let peer = remote.as_socket_addr().copied();
        if let Some(peer) = peer {
            self.connections
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peer, Arc::downgrade(&stream));
        }
        let io = SharedTcp {
            stream,
            peer,
            connections: self.connections.clone(),
        };
        Ok((io, local, remote, scheme))
    }
}

/// A TCP stream that the connection task drives and a stream handler may watch.
pub struct SharedTcp {
    stream: Arc<TcpStream>,
    peer: Option<SocketAddr>,
    connections: Connections,
}

impl Drop for SharedTcp {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            let mut map = self
                .connections
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if map
                .get(&peer)
                .is_some_and(|w| w.ptr_eq(&Arc::downgrade(&self.stream)))
            {
                map.remove(&peer);
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Dropping the last handle closes the socket; a half-close is not needed by HTTP/1 here.
        Poll::Ready(Ok(()))
    }
}
