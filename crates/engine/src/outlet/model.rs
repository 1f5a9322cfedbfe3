//! The `Wire` under loom: the feed puts lines on a viewer's connection while the stream's own
//! writer claims it, writes, and lends it back, against a socket whose first put write takes
//! one byte only (or fails). The writer here is `write_detached`'s loop with the socket taken
//! out: claim (send a put's tail first, or end when a put failed), take a frame from the body
//! or lend the connection and sleep. In every interleaving the bytes on the wire are the
//! head then every line once, whole and in order, and the writer is never left asleep with a
//! tail to send or a failure to notice (loom reports that as a deadlock).

use std::{
    collections::VecDeque,
    io,
    sync::Arc,
    task::{Poll, Waker},
};

use bytes::Bytes;
use loom::thread;
use prometheus_client::metrics::counter::Counter;

use super::{Claim, Wire, WriteNow};
use crate::{
    outlet::Outlet,
    sync::{AtomicBool, Mutex, lock, model},
};

/// A socket whose first write from a put takes one byte (or fails), and every write after
/// it all. The writer's own writes (`send`) always go whole, as `Out::send` waits for them.
pub(crate) struct Socket {
    sent: Mutex<Vec<u8>>,
    first_put_done: AtomicBool,
    fail: bool,
}

impl Socket {
    pub(crate) fn new(fail: bool) -> Arc<Self> {
        Arc::new(Self {
            sent: Mutex::new(Vec::new()),
            first_put_done: AtomicBool::new(false),
            fail,
        })
    }

    /// The writer's own write: all of it (it waits for the socket).
    pub(crate) fn send(&self, bytes: &[u8]) {
        lock(&self.sent).extend_from_slice(bytes);
    }

    /// Everything on the wire so far.
    pub(crate) fn sent(&self) -> String {
        String::from_utf8(lock(&self.sent).clone()).expect("the models write text")
    }
}

impl WriteNow for Socket {
    fn write_now<'p>(&self, pieces: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize> {
        let first = !self
            .first_put_done
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        if first && self.fail {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let mut budget = if first { 1 } else { usize::MAX };
        let mut sent = lock(&self.sent);
        let mut written = 0;
        for piece in pieces {
            let n = piece.len().min(budget);
            sent.extend_from_slice(&piece[..n]);
            budget -= n;
            written += n;
        }
        Ok(written)
    }
}

/// The stream's frames as the writer takes them from the body (the viewer's catch-up).
#[derive(Default)]
struct Body {
    frames: VecDeque<Bytes>,
    closed: bool,
    waker: Option<Waker>,
}

fn push(body: &Mutex<Body>, frame: Option<Bytes>) {
    let waker = {
        let mut body = lock(body);
        match frame {
            Some(frame) => body.frames.push_back(frame),
            None => body.closed = true,
        }
        body.waker.take()
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body ended: everything was written.
    Done,
    /// A put failed: the client has gone.
    Gone,
}

fn run(fail: bool) {
    let socket = Socket::new(fail);
    let partial_puts = Counter::default();
    let wire = Arc::new(Wire::new(socket.clone(), false, partial_puts.clone()));
    let body: Arc<Mutex<Body>> = Arc::default();

    // The feed: puts each line while the viewer is armed; once a put is refused, the viewer
    // is disarmed and takes the rest from the ring into its body, in order.
    let feed = {
        let (wire, body) = (wire.clone(), body.clone());
        thread::spawn(move || {
            let mut armed = true;
            for line in ["ab", "cd"] {
                let line = Bytes::from_static(line.as_bytes());
                if armed && wire.try_put(std::slice::from_ref(&line)) {
                    continue;
                }
                armed = false;
                push(&body, Some(line));
            }
            push(&body, None);
        })
    };

    // The writer: the head first (the Wire is busy until then), then its loop.
    assert_eq!(wire.claim(), Claim::Claimed);
    socket.send(b"H");
    let end = loom::future::block_on(std::future::poll_fn(|cx| {
        loop {
            match wire.claim() {
                Claim::Gone => return Poll::Ready(End::Gone),
                Claim::Tail(tail) => {
                    socket.send(&tail);
                    continue;
                }
                Claim::Claimed => {}
            }
            let next = {
                let mut body = lock(&body);
                match body.frames.pop_front() {
                    Some(frame) => Some(Some(frame)),
                    None if body.closed => Some(None),
                    None => {
                        body.waker = Some(cx.waker().clone());
                        None
                    }
                }
            };
            match next {
                Some(Some(frame)) => socket.send(&frame),
                Some(None) => return Poll::Ready(End::Done),
                None => {
                    wire.lend(cx.waker());
                    return Poll::Pending;
                }
            }
        }
    }));
    feed.join().unwrap();

    let sent = socket.sent();
    if fail {
        // A failed put: nothing of it went out, and the writer noticed (or the body ended
        // first, every line having gone the writer's way).
        assert!(sent == "H" || sent == "Habcd", "{sent:?} ({end:?})");
        assert!(end == End::Gone || sent == "Habcd", "{sent:?} ({end:?})");
    } else {
        assert_eq!(end, End::Done);
        assert_eq!(
            sent, "Habcd",
            "the head, then every line once, whole, in order"
        );
        assert!(partial_puts.get() <= 1, "only the first put was partial");
    }
}

#[test]
fn a_partial_put_racing_the_writer_keeps_the_stream_whole() {
    model(|| run(false));
}

#[test]
fn a_failed_put_ends_the_writer() {
    model(|| run(true));
}
