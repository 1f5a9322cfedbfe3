//! The synchronisation types of the hand-made primitives (`fanout::channel`, `outlet::Wire`):
//! std's normally, loom's under `--cfg buildlogs_loom`, so that the `model` submodule beside
//! each explores every interleaving of the very code the service runs.
//!
//! The cfg is the crate's own: `--cfg loom` would also switch tokio's loom paths on and break
//! its build. `Arc` stays std's (a `Waker` is made from a std `Arc`); what loom must see are
//! the locks and atomics inside. Under the cfg only the models can run: loom's types panic
//! outside `loom::model`.

#[cfg(not(buildlogs_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, atomic::AtomicUsize};

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

/// Runs a loom model over every interleaving with at most three preemptions (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): the bugs these models guard against need two or
/// three, and the bound keeps each model to seconds.
#[cfg(all(test, buildlogs_loom))]
pub(crate) fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(f);
}
