//! [`Gated`]: a future that is polled again only after it has woken its task, so a `select!`
//! that polls it at every wake-up of a busy stream pays two atomic operations instead of its
//! inner poll (a shared cancellation token's lock, a timer's or a socket's registration).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// Wraps `F`, polling it only when it asked to be (its waker was called) or was reset.
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker `inner` is polled with: it raises the flag, then wakes the task.
    waker: Waker,
    /// The task's waker last registered in the flag.
    task: Option<Waker>,
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
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            // The first poll always reaches the inner future, which registers our waker.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }

    /// The inner future, to change (a timer's deadline): it is polled at the next poll.
    pub fn inner_mut(&mut self) -> Pin<&mut F> {
        self.flag.woken.store(true, Ordering::Release);
        self.inner.as_mut()
    }

    pub fn poll_gated(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            // Not woken since the last poll, so the task's waker registered then is still
            // there (a wake takes it): register again only for another task's.
            if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                self.register(cx);
            }
            return Poll::Pending;
        }
        // Registered before the inner poll, so that a wake during it is not lost.
        self.register(cx);
        self.inner
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }

    fn register(&mut self, cx: &Context<'_>) {
        self.flag.task.register(cx.waker());
        match &mut self.task {
            Some(task) => task.clone_from(cx.waker()),
            None => self.task = Some(cx.waker().clone()),
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `inner` is boxed: `Gated` itself never needs pinning.
        self.get_mut().poll_gated(cx)
    }
}

impl<F> Unpin for Gated<F> {}

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
        let mut gated = Gated::new(tokio::time::sleep(Duration::from_secs(60)));
        assert!(futures_util::poll!(&mut gated).is_pending());
        let at = tokio::time::Instant::now() + Duration::from_secs(1);
        gated.inner_mut().reset(at);
        tokio::time::timeout(Duration::from_secs(2), &mut gated)
            .await
            .expect("the reset deadline applies");
        assert!(tokio::time::Instant::now() >= at);
    }
}
