//! The channel under loom: a viewer arming, waiting and disarming while the feed sends; a
//! revoke racing a delivery; a viewer unsubscribing while a send walks the slots. In every
//! interleaving each line reaches a viewer once (on its outlet or from the ring), a viewer
//! that waits is woken, and nothing is written to a connection its viewer has left.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use bytes::Bytes;
use loom::thread;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use super::{Channel, FeedMsg, Receiver};
use crate::{
    fanout::Line,
    ids::StreamId,
    outlet::Outlet,
    sync::{AtomicBool, Mutex, lock, model},
};

fn id(ms: u64) -> StreamId {
    StreamId::new(ms, 0)
}

fn line(ms: u64) -> FeedMsg {
    FeedMsg::Lines {
        after: id(ms - 1),
        lines: Arc::new([Line {
            id: id(ms),
            frame: Bytes::from(format!("{ms}")),
        }]),
        head: ms,
    }
}

/// An outlet that takes frames while `open`, recording each with whether its viewer had left.
struct Recorder {
    open: bool,
    left: AtomicBool,
    got: Mutex<Vec<(Bytes, bool)>>,
}

impl Recorder {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(Self {
            open,
            left: AtomicBool::new(false),
            got: Mutex::new(Vec::new()),
        })
    }

    fn frames(&self) -> Vec<Bytes> {
        lock(&self.got).iter().map(|(f, _)| f.clone()).collect()
    }

    fn written_after_leaving(&self) -> bool {
        lock(&self.got).iter().any(|(_, left)| *left)
    }
}

impl Outlet for Recorder {
    fn try_put(&self, frames: &[Bytes]) -> bool {
        if !self.open {
            return false;
        }
        let left = self.left.load(Ordering::SeqCst);
        lock(&self.got).extend(frames.iter().map(|f| (f.clone(), left)));
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

fn later() -> Instant {
    Instant::now() + std::time::Duration::from_secs(60)
}

/// The lines of `msg` after `pos`, as the viewer queues them (`FeedSubscription::next`).
fn after(msg: &FeedMsg, pos: StreamId) -> Vec<StreamId> {
    match msg {
        FeedMsg::Lines { lines, .. } => lines.iter().map(|l| l.id).filter(|l| *l > pos).collect(),
        FeedMsg::Done(_) | FeedMsg::Revoked => Vec::new(),
    }
}

/// The viewer's position once it took its outlet back.
fn position(rx: &Receiver, disarmed: Option<(StreamId, Instant)>) -> StreamId {
    let pos = disarmed.map_or(id(0), |(pos, _)| pos);
    rx.written().map_or(pos, |w| w.max(pos))
}

#[test]
fn a_send_racing_arm_and_disarm_delivers_once_and_wakes_a_waiting_viewer() {
    for open in [true, false] {
        model(move || {
            let chan = Arc::new(Channel::new(4, Counter::default()));
            let rx = chan.subscribe(Arc::default());
            let recorder = Recorder::new(open);
            let outlet: Arc<dyn Outlet> = recorder.clone();
            let wakes = Arc::new(Wakes::default());
            let waker = Waker::from(wakes.clone());
            let mut cx = Context::from_waker(&waker);

            let sender = {
                let chan = chan.clone();
                thread::spawn(move || chan.send(line(1)))
            };
            // The viewer loop: arm when idle, wait for the feed once, take the outlet back.
            rx.arm(&outlet, id(0), later());
            let waited = rx.poll_recv(&mut cx);
            let disarmed = rx.disarm();
            sender.join().unwrap();

            let pos = position(&rx, disarmed);
            let mut taken = Vec::new();
            if let Poll::Ready(Ok(msg)) = &waited {
                taken.extend(after(msg, id(0)));
            }
            let on_outlet = recorder.frames().len();
            if waited.is_pending() && on_outlet == 0 {
                assert!(
                    wakes.0.load(Ordering::SeqCst) >= 1,
                    "a waiting viewer whose outlet did not take the line was woken"
                );
            }
            if let Poll::Ready(Ok(msg)) = rx.poll_recv(&mut cx) {
                taken.extend(after(&msg, pos));
            }
            assert_eq!(
                on_outlet + taken.len(),
                1,
                "line 1 once: {on_outlet} on the outlet, taken {taken:?}"
            );
            assert!(on_outlet == 0 || open, "a refusing outlet got nothing");
        });
    }
}

#[test]
fn a_revoke_racing_a_delivery_ends_the_viewer_and_nothing_follows_it() {
    model(|| {
        let chan = Arc::new(Channel::new(4, Counter::default()));
        let rx = chan.subscribe(Arc::default());
        let recorder = Recorder::new(true);
        let outlet: Arc<dyn Outlet> = recorder.clone();
        let feed = {
            let chan = chan.clone();
            thread::spawn(move || chan.send(line(1)))
        };
        let monitor = {
            let chan = chan.clone();
            thread::spawn(move || chan.send(FeedMsg::Revoked))
        };
        rx.arm(&outlet, id(0), later());
        // The viewer waits until the feed says it is revoked (a lost wake is a deadlock).
        let mut taken = Vec::new();
        loom::future::block_on(std::future::poll_fn(|cx| {
            loop {
                match rx.poll_recv(cx) {
                    Poll::Ready(Ok(FeedMsg::Revoked)) => return Poll::Ready(()),
                    Poll::Ready(Ok(msg)) => taken.extend(after(&msg, position(&rx, None))),
                    Poll::Ready(Err(_)) => panic!("nothing lags here"),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }));
        // The stream ends here: its connection takes nothing more.
        recorder.left.store(true, Ordering::SeqCst);
        rx.disarm();
        feed.join().unwrap();
        monitor.join().unwrap();
        assert!(
            !recorder.written_after_leaving(),
            "nothing after the revoke"
        );
        assert!(
            recorder.frames().len() + taken.len() <= 1,
            "line 1 at most once"
        );
    });
}

#[test]
fn unsubscribing_during_a_send_stops_its_writes_and_keeps_the_others() {
    model(|| {
        let chan = Arc::new(Channel::new(4, Counter::default()));
        let staying = chan.subscribe(Arc::default());
        let leaving = chan.subscribe(Arc::default());
        let (kept, left) = (Recorder::new(true), Recorder::new(true));
        let (kept_outlet, left_outlet): (Arc<dyn Outlet>, Arc<dyn Outlet>) =
            (kept.clone(), left.clone());
        staying.arm(&kept_outlet, id(0), later());
        leaving.arm(&left_outlet, id(0), later());
        let sender = {
            let chan = chan.clone();
            thread::spawn(move || chan.send(line(1)))
        };
        drop(leaving);
        left.left.store(true, Ordering::SeqCst);
        sender.join().unwrap();
        assert!(
            !left.written_after_leaving(),
            "nothing written after the unsubscription returned"
        );
        assert_eq!(kept.frames(), [Bytes::from("1")], "the other viewer's line");
        assert_eq!(chan.receivers(), 1);
        // The list stays consistent after the swap: a newcomer and the stayer both get the next.
        let newcomer = chan.subscribe(Arc::default());
        let fresh = Recorder::new(true);
        let fresh_outlet: Arc<dyn Outlet> = fresh.clone();
        assert!(newcomer.arm(&fresh_outlet, id(1), later()));
        chan.send(line(2));
        assert_eq!(fresh.frames(), [Bytes::from("2")]);
        assert_eq!(kept.frames(), [Bytes::from("1"), Bytes::from("2")]);
        drop(staying);
        drop(newcomer);
        assert_eq!(chan.receivers(), 0);
    });
}

/// Line `ms` with a frame of three bytes, so that a socket can take part of it.
fn wide_line(ms: u64) -> FeedMsg {
    FeedMsg::Lines {
        after: id(ms - 1),
        lines: Arc::new([Line {
            id: id(ms),
            frame: Bytes::from(format!("<{ms}>")),
        }]),
        head: ms,
    }
}

/// The feed puts lines through a real `Wire` (its write under the receiver's slot lock and the
/// Wire's own, the first one taking a single byte), while the stream's task runs as
/// `write_detached` and the viewer loop do together: claim the connection (sending a put's
/// tail first), take the outlet back, take what the ring has, and when there is nothing, arm
/// the receiver and lend the connection. In every interleaving nothing deadlocks, and the
/// socket carries the head, then each line once, whole, in order.
#[test]
fn puts_under_the_slot_and_wire_locks_racing_the_stream_task_write_each_line_once() {
    use crate::outlet::{Claim, Wire, model::Socket};

    model(|| {
        let chan = Arc::new(Channel::new(4, Counter::default()));
        let rx = chan.subscribe(Arc::default());
        let socket = Socket::new(false);
        let wire = Arc::new(Wire::new(socket.clone(), false, Counter::default()));
        let outlet: Arc<dyn Outlet> = wire.clone();
        // The feed has sent everything, and the task to tell.
        let finished: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
        let feed = {
            let (chan, finished) = (chan.clone(), finished.clone());
            thread::spawn(move || {
                chan.send(wide_line(1));
                chan.send(wide_line(2));
                let waker = {
                    let mut finished = lock(&finished);
                    finished.0 = true;
                    finished.1.take()
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
            })
        };

        assert_eq!(wire.claim(), Claim::Claimed);
        socket.send(b"H");
        let mut pos = id(0);
        let mut armed = false;
        loom::future::block_on(std::future::poll_fn(|cx| {
            loop {
                let fin = {
                    let mut finished = lock(&finished);
                    finished.1 = Some(cx.waker().clone());
                    finished.0
                };
                match wire.claim() {
                    Claim::Gone => panic!("the socket never fails here"),
                    Claim::Tail(tail) => {
                        socket.send(&tail);
                        continue;
                    }
                    Claim::Claimed => {}
                }
                if std::mem::take(&mut armed)
                    && let Some((p, _)) = rx.disarm()
                {
                    pos = pos.max(p);
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Ok(msg)) => {
                        let from = rx.written().map_or(pos, |w| w.max(pos));
                        if let FeedMsg::Lines { lines, .. } = &msg {
                            for line in lines.iter().filter(|l| l.id > from) {
                                socket.send(&line.frame);
                                pos = line.id;
                            }
                        }
                        continue;
                    }
                    Poll::Ready(Err(_)) => panic!("nothing lags here"),
                    Poll::Pending => {}
                }
                // Every send was over before this pass began, and it found nothing left.
                if fin {
                    return Poll::Ready(());
                }
                armed = rx.arm(&outlet, pos, later());
                wire.lend(cx.waker());
                return Poll::Pending;
            }
        }));
        feed.join().unwrap();
        assert_eq!(socket.sent(), "H<1><2>", "each line once, whole, in order");
    });
}
