//! The end of a detached stream's connection: noticing that the client has gone, and closing
//! our side gracefully.

use std::{io, time::Duration};

use tokio::net::TcpStream;

/// Sends our end-of-file and waits a moment for the client's, so that bytes it sent and we
/// did not read do not turn our close into a reset that could destroy the stream's tail.
pub(super) async fn close_gracefully(socket: &TcpStream) {
    let fd = socket2::SockRef::from(socket);
    if fd.shutdown(std::net::Shutdown::Write).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client_gone(socket)).await;
    }
}

/// Resolves when the client has gone: end-of-file, a reset or any error. Whatever it sends
/// meanwhile (nothing is expected after a stream request) is read and discarded, so neither a
/// stray byte nor a pipelined request can hide its leaving.
pub(super) async fn client_gone(socket: &TcpStream) {
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
