//! Writes to a detached stream's socket that never wait: what the socket takes now, coalesced
//! into one `write` when small ([`write_now`]); and [`TcpNow`], the socket as the engine's
//! [`WriteNow`], so that the feed's puts through the stream's [`Wire`](buildlogs_engine::outlet::Wire) write the same way.

use std::{io, io::IoSlice, sync::Arc};

use buildlogs_engine::outlet::WriteNow;
use tokio::net::TcpStream;

/// A detached stream's socket, as what its `Wire` writes to.
pub(crate) struct TcpNow(pub(crate) Arc<TcpStream>);

impl WriteNow for TcpNow {
    fn write_now<'p>(&self, pieces: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize> {
        write_now(&self.0, pieces)
    }
}

/// Frames up to this size (with their chunk framing) are copied into one buffer to be written.
const COALESCE_BYTES: usize = 2048;

/// Writes as much of `pieces` as the socket takes now, without waiting: the bytes written.
/// Most writes are one small frame, sent with one `write` of a copy on the stack (no iovec per
/// piece, no allocation); larger ones go by `writev`.
pub(super) fn write_now<'p>(
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
