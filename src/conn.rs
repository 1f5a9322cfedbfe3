//! Connections: the socket registry that lets a stream notice its client has gone while it has
//! nothing to write, and the socket handle hyper serves each connection through.
//!
//! hyper, as the server runs it (half-close allowed, so it never reads while a response is in
//! flight: such a read would double its read buffer on every connection), learns that an HTTP/1
//! peer went away only when a write fails. An idle SSE stream would then hold its slot, its feed
//! subscription and its memory until the next heartbeat. The server registers each accepted
//! socket here ([`Connections::watch`]) under its peer address; a stream looks its socket up and
//! waits for end-of-file alongside its other events, at no cost while the connection is quiet.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, ready},
    time::Duration,
};

use poem::web::RemoteAddr;
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

impl Connections {
    /// Registers an accepted socket under its peer address and returns the handle the
    /// connection task serves it through.
    pub fn watch(&self, stream: TcpStream, peer: SocketAddr) -> SharedTcp {
        let stream = Arc::new(stream);
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, Arc::downgrade(&stream));
        SharedTcp {
            stream,
            peer,
            connections: self.clone(),
        }
    }
}

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TCP stream that the connection task drives and a stream handler may watch.
pub struct SharedTcp {
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    connections: Connections,
}

impl SharedTcp {
    /// The socket itself, for writing a response that has left hyper
    /// ([`crate::server::Detachable`]).
    pub fn socket(&self) -> Arc<TcpStream> {
        self.stream.clone()
    }

    /// Whether the client opens with the HTTP/2 preface, looked at without consuming it, so
    /// hyper reads the request from the socket itself (a rewinding reader would double its
    /// read buffer). `false` for anything else, including a client that closed at once.
    pub async fn speaks_h2(&self) -> io::Result<bool> {
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

impl Drop for SharedTcp {
    fn drop(&mut self) {
        let mut map = self
            .connections
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.peer)
            .is_some_and(|w| w.ptr_eq(&Arc::downgrade(&self.stream)))
        {
            map.remove(&self.peer);
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
