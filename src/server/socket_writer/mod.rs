//! Writing an event stream ourselves, and ending it on every path.
//!
//! Once a stream has left hyper ([`Detached`], HTTP/1), nothing of hyper's watches the
//! connection any more, so the writer does: it keeps reading the socket and discards what
//! arrives (end-of-file, a reset or any error means the client is gone), and it races every
//! blocked write against the stream's ends ([`StreamEnds`]: token expiry, lag limit, revocation), shutdown,
//! the client leaving and the stall limit (no write progress for that long). So a stream ends
//! however its client leaves or stalls, and releases everything it held at once.
//!
//! A detached stream also lends its engine an
//! [`Outlet`](buildlogs_engine::outlet::Outlet) ([`Wire`]): while the writer has
//! nothing in hand, the job's feed writes new lines to the socket itself, in order with the
//! writer's own writes, and the writer's task sleeps through them.
//!
//! What a stalled connection holds: a put takes at most
//! [`MAX_PUT_BYTES`](buildlogs_engine::outlet::MAX_PUT_BYTES) (16 KiB), and what
//! the socket did not take of it is copied into the `Wire`'s tail until the writer sends it.
//! So beyond the socket's own buffers and the feed's shared ring, the tails of an instance's
//! stalled viewers hold at most 16 KiB × `MAX_STREAMS` (320 MB at the default 20,000; a few
//! hundred bytes each in practice, since a put is usually one line). A stream that does not
//! drain its tail is ended by the stall limit like any other.
//!
//! An event stream on HTTP/2 stays in hyper (one connection carries many streams): its ends
//! are applied by the stream's watchdog (`server::watch`).
//!
//! The parts: [`head`] (the response head), [`socket`] (writes that never wait), [`stall`]
//! (a blocked write raced against the stream's ends), [`close`] (the client leaving, our
//! graceful close); chunk framing and the [`Wire`] are the engine's (`outlet`); the writer
//! loop is here.

mod close;
mod head;
mod socket;
mod stall;

use std::{io::IoSlice, sync::Arc, task::Poll, time::Duration};

use buildlogs_engine::outlet::{
    Claim, OutletSlot, StreamEnds, Wire,
    chunks::{SizeLines, wire_pieces},
};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, stream::BoxStream};
use poem::{Response, http::Version};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::{
    close::{client_gone, close_gracefully},
    head::encode_head,
    socket::{TcpNow, write_now},
    stall::Out,
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
        mut body,
        ends,
        outlet,
        chunked,
    } = detached;
    let wire = Arc::new(Wire::new(
        TcpNow(socket.clone()),
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
        gone: client_gone(socket).boxed(),
    };
    if out.send(&mut [IoSlice::new(&head)]).await.is_err() {
        return;
    }
    drop(head);
    let mut chunks: Vec<Bytes> = Vec::new();
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
                match body.poll_next_unpin(cx) {
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
            if out.gone.poll_unpin(cx).is_ready() {
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

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use buildlogs_engine::outlet::{MAX_PUT_BYTES, Outlet};

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
        let wire = Wire::new(TcpNow(Arc::new(server)), true, Counter::default());
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
}
