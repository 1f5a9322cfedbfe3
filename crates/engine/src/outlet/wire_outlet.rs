//! [`Wire`]: a detached stream's connection as the [`Outlet`] the feed writes to, a state
//! machine (busy, tail, broken, the writer's waker) over anything that writes without waiting
//! ([`WriteNow`]): the server's socket, or the loom model's.

use std::{io, sync::Arc, task::Waker};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use super::{
    Outlet,
    chunks::{SizeLines, wire_pieces},
};
use crate::sync::{Mutex, MutexGuard, lock};

/// A detached stream's connection, lent to the stream as its [`Outlet`]: the feed writes live
/// lines to the socket itself while the writer task has nothing in hand. Generic over what it
/// writes to so that its loom model (`model`) can drive its state machine against a socket that takes
/// what the model says; the service only ever has its TCP socket there.
pub struct Wire<S> {
    socket: S,
    chunked: bool,
    state: Mutex<WireState>,
    /// Puts the socket took only part of (their rest went to the tail).
    partial_puts: Counter,
}

struct WireState {
    /// The writer task holds frames it has not written, or is taking them from the body: the
    /// outlet takes nothing, so that nothing overtakes them.
    busy: bool,
    /// What the socket did not take of a put: the writer sends it before anything else.
    tail: Vec<u8>,
    /// A put's write failed: the client has gone.
    broken: bool,
    /// The writer task, while it waits.
    waker: Option<Waker>,
}

/// Where a [`Wire`] writes: something that takes what it can at once, never waiting.
pub trait WriteNow: Send + Sync {
    /// Writes as much of `pieces` as it takes now, in order: the bytes written.
    fn write_now<'p>(&self, pieces: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize>;
}

impl<T: WriteNow> WriteNow for Arc<T> {
    fn write_now<'p>(&self, pieces: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize> {
        (**self).write_now(pieces)
    }
}

/// What the writer must do before it takes frames of its own (see [`Wire::claim`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A put's write failed: the client has gone.
    Gone,
    /// Send what a put left unsent, then claim again.
    Tail(Vec<u8>),
    /// The connection is the writer's: puts take nothing until it [`lend`](Wire::lend)s it.
    Claimed,
}

impl<S> Wire<S> {
    pub fn new(socket: S, chunked: bool, partial_puts: Counter) -> Self {
        Self {
            socket,
            chunked,
            // Busy until the writer has sent the head and the stream's first frames.
            state: Mutex::new(WireState {
                busy: true,
                tail: Vec::new(),
                broken: false,
                waker: None,
            }),
            partial_puts,
        }
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        lock(&self.state)
    }

    /// The writer takes the connection for frames of its own, unless a put failed or left
    /// bytes that must go first.
    pub fn claim(&self) -> Claim {
        let mut state = self.lock();
        if state.broken {
            return Claim::Gone;
        }
        if !state.tail.is_empty() {
            return Claim::Tail(std::mem::take(&mut state.tail));
        }
        state.busy = true;
        Claim::Claimed
    }

    /// The writer has nothing in hand: puts may write until it claims the connection again,
    /// and `waker` is woken when one leaves it something to do (a tail, a failure).
    pub fn lend(&self, waker: &Waker) {
        let mut state = self.lock();
        state.busy = false;
        match &mut state.waker {
            Some(current) if current.will_wake(waker) => {}
            current => *current = Some(waker.clone()),
        }
    }
}

/// Largest put a [`Wire`] takes: what the socket does not take of it is copied, so this bounds
/// what a stalled viewer's connection holds beyond the feed's shared ring. A larger batch (a
/// burst) goes through the stream's own task, which writes it from the shared frames.
pub const MAX_PUT_BYTES: usize = 16 * 1024;

impl<S: WriteNow> Outlet for Wire<S> {
    fn try_put(&self, frames: &[Bytes]) -> bool {
        // The write happens with this lock held (and, from the feed, the receiver's slot
        // lock): it is what keeps the writer's own writes from overtaking or splitting the
        // put's bytes, and what makes "taken" and "the tail is the writer's" one step. Both
        // locks are this one viewer's, taken in that order everywhere (the writer never holds
        // this one while it polls its stream); the write never waits (what the socket does not
        // take goes to the tail). The loom models check a partial put against the writer
        // (`model`) and the feed's puts under both locks against the stream's task
        // (`fanout::channel`'s model): no deadlock, every line once, whole, in order.
        let mut state = self.lock();
        if state.busy || state.broken {
            return false;
        }
        let sizes = SizeLines::of(frames, self.chunked);
        let pieces = || wire_pieces(frames, &sizes, self.chunked);
        let total: usize = pieces().map(<[u8]>::len).sum();
        if total > MAX_PUT_BYTES {
            return false;
        }
        let (taken, wake) = match self.socket.write_now(pieces()) {
            Ok(written) if written == total => (true, false),
            // Nothing went: the stream's own task sends them, racing its ends.
            Ok(0) => (false, false),
            // The rest is the writer's to send, before anything else.
            Ok(written) => {
                let mut skip = written;
                for piece in pieces() {
                    let from = skip.min(piece.len());
                    state.tail.extend_from_slice(&piece[from..]);
                    skip -= from;
                }
                state.busy = true;
                self.partial_puts.inc();
                (true, true)
            }
            Err(_) => {
                state.broken = true;
                (false, true)
            }
        };
        let waker = wake.then(|| state.waker.take()).flatten();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        taken
    }
}
