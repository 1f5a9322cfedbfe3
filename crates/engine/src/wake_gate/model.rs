//! The gate under loom: a task that is polled only when woken (loom's `block_on`) waits on a
//! gated future that another thread wakes three times. Every interleaving of those wakes with
//! the gate's polls must end with the future done; a lost wakeup leaves the task parked for
//! good, which loom reports as a deadlock. Before the fix (registering only when the flag was
//! raised, clearing it after) the interleaving of issue 22 fails here.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use loom::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use super::Gated;
use crate::sync::model;

/// Ready once `count` reaches `until`; keeps the waker it was last polled with, registering it
/// before it looks at the count (as every future must).
struct Count {
    count: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<Waker>>>,
    until: usize,
}

impl Future for Count {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.count.load(Ordering::SeqCst) >= self.until {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_wake_during_registration_is_not_lost() {
    model(|| {
        let count = Arc::new(AtomicUsize::new(0));
        let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let waking = {
            let (count, waker) = (count.clone(), waker.clone());
            thread::spawn(move || {
                // The gated future hands out the gate's waker at its first poll.
                let gate_waker = loop {
                    if let Some(w) = waker.lock().unwrap().clone() {
                        break w;
                    }
                    thread::yield_now();
                };
                for n in 1..=3 {
                    count.store(n, Ordering::SeqCst);
                    gate_waker.wake_by_ref();
                }
            })
        };
        loom::future::block_on(Gated::new(Count {
            count,
            waker,
            until: 3,
        }));
        waking.join().unwrap();
    });
}
