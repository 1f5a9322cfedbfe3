//! A feed's channel to its viewers: its last few messages in a ring, a cursor per receiver, and
//! direct delivery. While a receiver has read everything and its connection lent it an
//! [`Outlet`], the channel writes each new batch of lines to that outlet itself: a line then
//! costs each idle viewer one write, and wakes none of their tasks. A receiver whose outlet
//! cannot take a batch at once (its socket is full, its own task is writing, its token has
//! expired) is disarmed and woken, and takes the batch from the ring like any other.
//!
//! Why not `tokio::sync::broadcast`: its receivers must each take every message themselves, a
//! task wake-up per viewer per batch, and a receiver that let the feed deliver for it would lag.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use super::hub::FeedMsg;
use crate::{
    ids::StreamId,
    outlet::Outlet,
    sync::{AtomicUsize, Mutex, lock},
};

/// The ring and the receivers of one feed.
pub(super) struct Channel {
    ring: Mutex<Ring>,
    /// Every receiver's slot. A send takes the list as it is (a reference count) and walks it
    /// without the lock while it writes to outlets; a subscription pushes to it, an
    /// unsubscription swaps its slot out by index, in place unless a delivery still walks the
    /// list (then on a copy).
    slots: Mutex<Arc<Vec<Arc<Slot>>>>,
    /// `buildlogs_lines_delivered_total`: lines written to outlets count here.
    delivered: Counter,
}

struct Ring {
    msgs: VecDeque<FeedMsg>,
    /// The sequence number of `msgs[0]`.
    first: u64,
    capacity: usize,
}

impl Ring {
    /// The sequence number the next message gets.
    fn end(&self) -> u64 {
        self.first + self.msgs.len() as u64
    }
}

/// One receiver's place in the channel.
struct Slot {
    state: Mutex<SlotState>,
    /// The feed's line count (`head`) when this receiver last took lines, for the lag limit.
    mark: Arc<AtomicU64>,
    /// Where the slot is in the channel's list; changed only under the list's lock.
    index: AtomicUsize,
}

#[derive(Default)]
struct SlotState {
    /// The sequence number of the next message this receiver takes.
    cursor: u64,
    /// The receiver's task, waiting for a message (or for its outlet to be handed back).
    waker: Option<Waker>,
    /// Set while the channel may write lines to the receiver's outlet itself.
    armed: Option<Armed>,
    /// The last line the channel wrote to the outlet, and when; until the receiver takes it.
    written: Option<(StreamId, Instant)>,
}

struct Armed {
    outlet: Arc<dyn Outlet>,
    /// The last line on the outlet: only lines after it are written.
    pos: StreamId,
    /// The stream's token expires then: from then on, nothing is written for it.
    expires_at: Instant,
}

/// Receivers per delivery task, when a message goes to many.
const DELIVERY_PART: usize = 128;

/// One message on its way to the receivers that were subscribed when it was sent.
struct Delivery {
    seq: u64,
    msg: FeedMsg,
    /// The frames of its lines, if it has any.
    frames: Vec<Bytes>,
    slots: Arc<Vec<Arc<Slot>>>,
    now: Instant,
}

impl Delivery {
    /// Delivers the message to `slots[range]`: the lines written to outlets.
    fn deliver(&self, range: std::ops::Range<usize>) -> u64 {
        let lines = match &self.msg {
            FeedMsg::Lines { lines, head, .. } => Some((lines, *head)),
            FeedMsg::Done(_) | FeedMsg::Revoked => None,
        };
        let mut written = 0;
        for slot in &self.slots[range] {
            let mut guard = lock(&slot.state);
            let state = &mut *guard;
            if let Some(armed) = state.armed.as_mut() {
                if let Some((lines, head)) = lines
                    && state.cursor == self.seq
                    && self.now < armed.expires_at
                {
                    let skip = lines.partition_point(|l| l.id <= armed.pos);
                    // The put writes to the socket with this slot's lock held: the write and
                    // the cursor's move past the batch are then one step for the receiver,
                    // which could otherwise take the same batch from the ring, or get its
                    // outlet back, while the write is under way. The lock is this receiver's
                    // alone and the write never waits (see `Wire::try_put`; the model
                    // `puts_under_the_slot_and_wire_locks_…` checks it against the stream's task).
                    if skip == lines.len() || armed.outlet.try_put(&self.frames[skip..]) {
                        if let Some(last) = lines.last().filter(|_| skip < lines.len()) {
                            armed.pos = last.id;
                            state.written = Some((last.id, self.now));
                            written += (lines.len() - skip) as u64;
                        }
                        state.cursor = self.seq + 1;
                        slot.mark.store(head, Ordering::Relaxed);
                        continue;
                    }
                }
                // It takes this message from the ring itself.
                state.armed = None;
            }
            let waker = state.waker.take();
            drop(guard);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        written
    }
}

/// The receiver fell behind the ring: messages it had not read are gone. Its cursor moved to
/// the oldest message kept.
#[derive(Debug)]
pub(super) struct Lagged;

impl Channel {
    pub(super) fn new(capacity: usize, delivered: Counter) -> Self {
        Self {
            ring: Mutex::new(Ring {
                msgs: VecDeque::with_capacity(capacity),
                first: 0,
                capacity,
            }),
            slots: Mutex::new(Arc::default()),
            delivered,
        }
    }

    /// A receiver of every message sent from now on.
    pub(super) fn subscribe(self: &Arc<Self>, mark: Arc<AtomicU64>) -> Receiver {
        let mut slots = lock(&self.slots);
        // Under the slots lock: a send either has this slot in its snapshot, or pushed its
        // message before the cursor was read (and the receiver does not expect it).
        let cursor = lock(&self.ring).end();
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                cursor,
                ..SlotState::default()
            }),
            mark,
            index: AtomicUsize::new(slots.len()),
        });
        Arc::make_mut(&mut slots).push(slot.clone());
        Receiver {
            chan: self.clone(),
            slot,
        }
    }

    /// Receivers subscribed.
    pub(super) fn receivers(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Sends `msg` to every receiver: lines straight to the outlets of armed receivers that
    /// take them; every other receiver waiting is woken.
    pub(super) fn send(&self, msg: FeedMsg) {
        let delivery = self.push(msg);
        let written = delivery.deliver(0..delivery.slots.len());
        self.count(written);
    }

    /// As [`send`](Self::send), for a feed's reader: a feed with many receivers is delivered
    /// in parts, each a task of its own, so that the runtime's workers write to its viewers in
    /// parallel. It returns when every part is done: the next message starts after.
    pub(super) async fn send_parallel(&self, msg: FeedMsg) {
        let delivery = self.push(msg);
        let receivers = delivery.slots.len();
        if receivers <= DELIVERY_PART {
            let written = delivery.deliver(0..receivers);
            self.count(written);
            return;
        }
        let delivery = Arc::new(delivery);
        // The first part runs here, at once; the others are spawned first, so that the other
        // workers can take them meanwhile (all but the last spawned: it waits in this
        // worker's next-task slot, which others cannot steal from, until this task yields).
        let parts: Vec<_> = (DELIVERY_PART..receivers)
            .step_by(DELIVERY_PART)
            .map(|at| {
                let delivery = delivery.clone();
                tokio::spawn(
                    async move { delivery.deliver(at..(at + DELIVERY_PART).min(receivers)) },
                )
            })
            .collect();
        let mut written = delivery.deliver(0..DELIVERY_PART);
        for part in parts {
            // A part panics only with a bug; its receivers are then woken by nobody, and
            // their streams end at their stall or expiry.
            written += part.await.unwrap_or(0);
        }
        self.count(written);
    }

    /// Puts `msg` in the ring: what remains is to deliver it to the receivers subscribed now.
    fn push(&self, msg: FeedMsg) -> Delivery {
        let seq = {
            let mut ring = lock(&self.ring);
            if ring.msgs.len() == ring.capacity {
                ring.msgs.pop_front();
                ring.first += 1;
            }
            ring.msgs.push_back(msg.clone());
            ring.end() - 1
        };
        let frames = match &msg {
            FeedMsg::Lines { lines, .. } => lines.iter().map(|l| l.frame.clone()).collect(),
            FeedMsg::Done(_) | FeedMsg::Revoked => Vec::new(),
        };
        Delivery {
            seq,
            msg,
            frames,
            slots: lock(&self.slots).clone(),
            now: Instant::now(),
        }
    }

    fn count(&self, written: u64) {
        if written > 0 {
            self.delivered.inc_by(written);
        }
    }

    fn unsubscribe(&self, slot: &Arc<Slot>) {
        // Nothing is written to the outlet from here on: a delivery that read the slot's
        // state before this took it has finished its write.
        lock(&slot.state).armed = None;
        let mut slots = lock(&self.slots);
        let slots = Arc::make_mut(&mut slots);
        let at = slot.index.load(Ordering::Relaxed);
        debug_assert!(Arc::ptr_eq(&slots[at], slot), "a slot's index is its place");
        slots.swap_remove(at);
        if let Some(moved) = slots.get(at) {
            moved.index.store(at, Ordering::Relaxed);
        }
    }
}

/// One viewer's end of a [`Channel`]; dropping it unsubscribes.
pub(super) struct Receiver {
    chan: Arc<Channel>,
    slot: Arc<Slot>,
}

impl Receiver {
    /// The next message this receiver has not taken. Taking one hands the outlet back.
    pub(super) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<FeedMsg, Lagged>> {
        let mut state = lock(&self.slot.state);
        let ring = lock(&self.chan.ring);
        if state.cursor < ring.first {
            state.cursor = ring.first;
            state.armed = None;
            return Poll::Ready(Err(Lagged));
        }
        if let Some(msg) = ring.msgs.get((state.cursor - ring.first) as usize) {
            state.cursor += 1;
            state.armed = None;
            return Poll::Ready(Ok(msg.clone()));
        }
        drop(ring);
        // Registered under the slot's lock, after looking at the ring: a send that pushes a
        // message after the look wakes this waker.
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Lets the channel write lines after `pos` straight to `outlet` until `expires_at` (or
    /// until the receiver takes a message, or [`disarm`](Self::disarm)s). Only a receiver that
    /// has taken every message is armed; false otherwise.
    pub(super) fn arm(&self, outlet: &Arc<dyn Outlet>, pos: StreamId, expires_at: Instant) -> bool {
        let mut state = lock(&self.slot.state);
        if state.cursor != lock(&self.chan.ring).end() {
            return false;
        }
        state.armed = Some(Armed {
            outlet: outlet.clone(),
            pos,
            expires_at,
        });
        true
    }

    /// The last line the channel wrote to the outlet since the receiver last asked, if any.
    pub(super) fn written(&self) -> Option<StreamId> {
        lock(&self.slot.state).written.map(|(id, _)| id)
    }

    /// Takes the outlet back: the last line the channel wrote to it since the receiver last
    /// asked, and when.
    pub(super) fn disarm(&self) -> Option<(StreamId, Instant)> {
        let mut state = lock(&self.slot.state);
        state.armed = None;
        state.written.take()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.chan.unsubscribe(&self.slot);
    }
}

#[cfg(all(test, buildlogs_loom))]
mod model;

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicBool,
        task::{Wake, Waker},
    };

    use super::*;
    use crate::fanout::Line;

    /// An outlet that takes frames while `open`, recording them.
    #[derive(Default)]
    struct Recorder {
        open: AtomicBool,
        got: Mutex<Vec<Bytes>>,
    }

    impl Outlet for Recorder {
        fn try_put(&self, frames: &[Bytes]) -> bool {
            if !self.open.load(Ordering::SeqCst) {
                return false;
            }
            lock(&self.got).extend(frames.iter().cloned());
            true
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicU64);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn id(ms: u64) -> StreamId {
        format!("{ms}-0").parse().unwrap()
    }

    fn lines(from: u64, to: u64, head: u64) -> FeedMsg {
        let lines: Vec<Line> = (from..=to)
            .map(|ms| Line {
                id: id(ms),
                frame: Bytes::from(format!("line {ms}\n")),
            })
            .collect();
        FeedMsg::Lines {
            after: id(from - 1),
            lines: lines.into(),
            head,
        }
    }

    /// A channel with one receiver, a waker that counts its wake-ups, and an open outlet.
    struct Fixture {
        chan: Arc<Channel>,
        rx: Receiver,
        wakes: Arc<Wakes>,
        waker: Waker,
        recorder: Arc<Recorder>,
        outlet: Arc<dyn Outlet>,
    }

    fn fixture(capacity: usize) -> Fixture {
        let chan = Arc::new(Channel::new(capacity, Counter::default()));
        let rx = chan.subscribe(Arc::default());
        let wakes = Arc::new(Wakes::default());
        let recorder = Arc::new(Recorder::default());
        recorder.open.store(true, Ordering::SeqCst);
        Fixture {
            chan,
            rx,
            waker: Waker::from(wakes.clone()),
            wakes,
            outlet: recorder.clone(),
            recorder,
        }
    }

    /// A token expiry well after the test.
    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    fn recv(rx: &Receiver, waker: &Waker) -> Poll<Result<FeedMsg, Lagged>> {
        rx.poll_recv(&mut Context::from_waker(waker))
    }

    fn ids(msg: &FeedMsg) -> Vec<StreamId> {
        match msg {
            FeedMsg::Lines { lines, .. } => lines.iter().map(|l| l.id).collect(),
            other => panic!("lines expected, got {other:?}"),
        }
    }

    #[test]
    fn an_armed_receiver_gets_lines_on_its_outlet_without_waking() {
        let Fixture {
            chan,
            rx,
            wakes,
            waker,
            recorder,
            outlet,
        } = fixture(4);
        assert!(recv(&rx, &waker).is_pending());
        assert!(rx.arm(&outlet, id(0), later()));
        chan.send(lines(1, 2, 2));
        chan.send(lines(3, 3, 3));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "nobody woken");
        let got: Vec<Bytes> = lock(&recorder.got).clone();
        assert_eq!(got, ["line 1\n", "line 2\n", "line 3\n"]);
        assert_eq!(chan.delivered.get(), 3);
        // Everything was delivered: nothing left to take, and the outlet comes back with the
        // position reached.
        assert!(recv(&rx, &waker).is_pending());
        assert_eq!(rx.disarm().map(|(pos, _)| pos), Some(id(3)));
        assert_eq!(rx.disarm(), None);
    }

    #[test]
    fn a_refusing_outlet_wakes_its_receiver_which_takes_the_batch_from_the_ring() {
        let Fixture {
            chan,
            rx,
            wakes,
            waker,
            recorder,
            outlet,
        } = fixture(4);
        assert!(recv(&rx, &waker).is_pending());
        assert!(rx.arm(&outlet, id(0), later()));
        chan.send(lines(1, 1, 1));
        recorder.open.store(false, Ordering::SeqCst);
        chan.send(lines(2, 3, 3));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // Line 1 went out; the batch after it is the receiver's to take, and nothing more
        // goes to the outlet.
        assert_eq!(rx.written(), Some(id(1)));
        let Poll::Ready(Ok(msg)) = recv(&rx, &waker) else {
            panic!("a message expected")
        };
        assert_eq!(ids(&msg), [id(2), id(3)]);
        recorder.open.store(true, Ordering::SeqCst);
        chan.send(lines(4, 4, 4));
        assert_eq!(lock(&recorder.got).len(), 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "not waiting: not woken");
        assert!(recv(&rx, &waker).is_ready());
    }

    #[test]
    fn a_receiver_with_unread_messages_is_not_armed_and_expired_ones_are_woken() {
        let Fixture {
            chan,
            rx,
            wakes,
            waker,
            recorder,
            outlet,
        } = fixture(4);
        chan.send(lines(1, 1, 1));
        assert!(!rx.arm(&outlet, id(0), later()));
        assert!(recv(&rx, &waker).is_ready());
        assert!(recv(&rx, &waker).is_pending());
        // Armed with a token that has already expired: nothing is written, the receiver wakes.
        assert!(rx.arm(&outlet, id(1), Instant::now()));
        chan.send(lines(2, 2, 2));
        assert!(lock(&recorder.got).is_empty());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(recv(&rx, &waker).is_ready());
    }

    #[test]
    fn a_receiver_that_fell_behind_the_ring_lags_then_reads_the_oldest_kept() {
        let Fixture {
            chan, rx, waker, ..
        } = fixture(2);
        for ms in 1..=3 {
            chan.send(lines(ms, ms, ms));
        }
        assert!(matches!(recv(&rx, &waker), Poll::Ready(Err(Lagged))));
        let Poll::Ready(Ok(msg)) = recv(&rx, &waker) else {
            panic!("a message expected")
        };
        assert_eq!(ids(&msg), [id(2)]);
        assert_eq!(chan.receivers(), 1);
        drop(rx);
        assert_eq!(chan.receivers(), 0);
    }
}
