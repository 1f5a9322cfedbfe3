//! [`Gated`]: a future that is polled again only after it has woken its task (and
//! [`GatedStream`], a stream), so a `select!` or poll loop that polls it at every wake-up of a
//! busy stream pays an atomic swap and a waker registration instead of its inner poll (a
//! shared cancellation token's lock, a timer's or a socket's registration).
//!
//! The gate follows `AtomicWaker`'s contract: every poll registers the task's waker first,
//! then looks at the flag the inner future's wake raised. A wake that lands between the two
//! (it takes the waker just registered, and wakes the task) leaves the flag raised for this
//! poll or the next; registering only "when something changed" would let such a wake empty the
//! registration for good, and the task would never be woken again (issue 22). Its loom model
//! (`model`) checks every interleaving of a wake with a poll.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll, Wake, Waker},
};

use futures_util::{FutureExt, Stream, StreamExt};

use crate::sync::{AtomicBool, AtomicWaker};

/// Wraps `F`, polling it only when it asked to be (its waker was called) or was changed.
pub struct Gated<F> {
    inner: F,
    gate: Gate,
}

/// Wraps a stream, polling it again only after it yielded an item or asked to be (its waker
/// was called): a loop that polls it at every wake-up of its task skips it while it waits.
pub struct GatedStream<S> {
    inner: S,
    gate: Gate,
}

/// Whether the gated future or stream must be polled, and the waker it is polled with.
struct Gate {
    flag: Arc<Flag>,
    /// The waker the inner future is polled with: it raises the flag, then wakes the task.
    waker: Waker,
    /// Poll the inner future next time though it did not wake (it yielded, or was changed).
    forced: bool,
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A swap, not a store: with the poll's swap, every change of the flag is then one
        // read-modify-write chain, the order loom's model needs to see what the hardware gives
        // (it orders a plain store after another thread's earlier swap only by causality).
        self.woken.swap(true, Ordering::Release);
        self.task.wake();
    }
}

impl Gate {
    fn new() -> Self {
        let flag = Arc::new(Flag {
            // The first poll always reaches the inner future, which registers our waker.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(flag.clone()),
            flag,
            forced: false,
        }
    }

    /// The next poll reaches the inner future.
    fn open(&mut self) {
        self.forced = true;
    }

    /// Whether the inner future must be polled now; either way, `cx`'s task is woken when it
    /// must be next.
    fn pass(&mut self, cx: &Context<'_>) -> bool {
        // Register first, then take the flag: a wake after the registration finds the waker
        // (or raised the flag before the swap, which this poll sees). `AtomicWaker` keeps an
        // unchanged waker without cloning it, so this costs a few atomic operations.
        self.flag.task.register(cx.waker());
        let woken = self.flag.woken.swap(false, Ordering::AcqRel);
        std::mem::take(&mut self.forced) || woken
    }
}

impl<F: Future + Unpin> Gated<F> {
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            gate: Gate::new(),
        }
    }

    /// The inner future, to change (a timer's deadline): it is polled at the next poll.
    pub fn inner_mut(&mut self) -> &mut F {
        self.gate.open();
        &mut self.inner
    }

    pub fn poll_gated(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        if cfg!(feature = "bench-plain-polling") {
            return self.inner.poll_unpin(cx);
        }
        if !self.gate.pass(cx) {
            return Poll::Pending;
        }
        self.inner
            .poll_unpin(&mut Context::from_waker(&self.gate.waker))
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.get_mut().poll_gated(cx)
    }
}

impl<S: Stream + Unpin> GatedStream<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            gate: Gate::new(),
        }
    }

    pub fn poll_next_gated(&mut self, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if cfg!(feature = "bench-plain-polling") {
            return self.inner.poll_next_unpin(cx);
        }
        if !self.gate.pass(cx) {
            return Poll::Pending;
        }
        let next = self
            .inner
            .poll_next_unpin(&mut Context::from_waker(&self.gate.waker));
        if next.is_ready() {
            // More may be ready at once: only a `Pending` closes the gate.
            self.gate.open();
        }
        next
    }
}

#[cfg(all(test, buildlogs_loom))]
mod model;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wakes_when_its_inner_future_is_ready_and_only_polls_it_then() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = {
            let polls = polls.clone();
            let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs(5)));
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                sleep.as_mut().poll(cx)
            })
        };
        let mut gated = Gated::new(counted);
        for _ in 0..10 {
            assert!(futures_util::poll!(&mut gated).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, then gated");
        tokio::time::timeout(Duration::from_secs(6), &mut gated)
            .await
            .expect("the timer fired through the gate");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_timer_is_polled_again() {
        let mut gated = Gated::new(Box::pin(tokio::time::sleep(Duration::from_secs(60))));
        assert!(futures_util::poll!(&mut gated).is_pending());
        let at = tokio::time::Instant::now() + Duration::from_secs(1);
        gated.inner_mut().as_mut().reset(at);
        tokio::time::timeout(Duration::from_secs(2), &mut gated)
            .await
            .expect("the reset deadline applies");
        assert!(tokio::time::Instant::now() >= at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_stream_is_polled_until_pending_then_only_after_a_wake() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = {
            let polls = polls.clone();
            tokio_stream_like(rx, polls)
        };
        let mut gated = GatedStream::new(Box::pin(counted));
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(poll_once(&mut gated).await, Poll::Ready(Some(1)));
        assert_eq!(poll_once(&mut gated).await, Poll::Ready(Some(2)));
        assert_eq!(poll_once(&mut gated).await, Poll::Pending);
        let before = polls.load(Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(poll_once(&mut gated).await, Poll::Pending);
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            before,
            "gated while it waits"
        );
        tx.send(3).unwrap();
        assert_eq!(poll_once(&mut gated).await, Poll::Ready(Some(3)));
        drop(tx);
        assert_eq!(poll_once(&mut gated).await, Poll::Ready(None));
    }

    async fn poll_once<S: Stream + Unpin>(gated: &mut GatedStream<S>) -> Poll<Option<S::Item>> {
        std::future::poll_fn(|cx| Poll::Ready(gated.poll_next_gated(cx))).await
    }

    fn tokio_stream_like(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl Stream<Item = u32> {
        futures_util::stream::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            rx.poll_recv(cx)
        })
    }
}
