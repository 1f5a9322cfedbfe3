//! The synchronisation types of the hand-made primitives (`wake_gate`, `fanout::channel`,
//! `outlet::Wire`): std's (and futures') normally, loom's under `--cfg buildlogs_loom`, so that
//! the `model` submodule beside each explores every interleaving of the very code the service
//! runs.
//!
//! The cfg is the crate's own: `--cfg loom` would also switch tokio's loom paths on and break
//! its build. `Arc` stays std's (a `Waker` is made from a std `Arc`); what loom must see are
//! the locks and atomics inside. Under the cfg only the models can run: loom's types panic
//! outside `loom::model`.

#[cfg(not(buildlogs_loom))]
pub(crate) use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicUsize},
};

#[cfg(buildlogs_loom)]
pub(crate) use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicUsize},
};

/// Locks `mutex`; a poisoned lock (a panic while it was held) is taken as it is: every
/// critical section here leaves its state consistent at each step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A task's waker, registered by one side and woken by the other (futures' `AtomicWaker`, or
/// loom's), behind one signature.
pub(crate) struct AtomicWaker(WakerCell);

#[cfg(not(buildlogs_loom))]
type WakerCell = futures_util::task::AtomicWaker;
#[cfg(buildlogs_loom)]
type WakerCell = loom::future::AtomicWaker;

impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self(WakerCell::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        #[cfg(not(buildlogs_loom))]
        self.0.register(waker);
        #[cfg(buildlogs_loom)]
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// Runs a loom model over every interleaving with at most three preemptions (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): the bugs these models guard against need two or
/// three, and the bound keeps each model to seconds.
#[cfg(all(test, buildlogs_loom))]
pub(crate) fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(f);
}
