//! The gate's lost wakeup (issue 22), replayed deterministically on one thread: the task's
//! waker runs a hook when it is cloned, which is exactly when the gate registers it, and the
//! hook wakes the gated future as another thread could at that moment. Before the fix, that
//! wake took the waker just registered and its raised flag was then cleared, so the gate never
//! registered again: every later wake found no waker, and the task slept for good.
//!
//! A clone hook needs a hand-made `RawWaker` vtable, the one `unsafe` of the workspace; it is
//! here, in a test crate, because the service forbids `unsafe` code.

use std::{
    future::Future,
    mem::ManuallyDrop,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, RawWaker, RawWakerVTable, Waker},
};

use buildlogs::wake_gate::Gated;

/// A task waker that counts its wakes and, once armed, runs a hook at its next clone.
#[derive(Default)]
struct Hooked {
    wakes: AtomicUsize,
    on_clone: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    hooks_run: AtomicUsize,
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

fn raw(hooked: Arc<Hooked>) -> RawWaker {
    RawWaker::new(Arc::into_raw(hooked).cast(), &VTABLE)
}

/// The `Hooked` behind a raw waker's pointer, borrowed (its count untouched).
///
/// # Safety
/// `ptr` comes from [`raw`] and its waker is alive.
unsafe fn borrowed(ptr: *const ()) -> ManuallyDrop<Arc<Hooked>> {
    ManuallyDrop::new(unsafe { Arc::from_raw(ptr.cast::<Hooked>()) })
}

unsafe fn clone(ptr: *const ()) -> RawWaker {
    let hooked = unsafe { borrowed(ptr) };
    let hook = hooked
        .on_clone
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(hook) = hook {
        hooked.hooks_run.fetch_add(1, Ordering::SeqCst);
        hook();
    }
    raw(Arc::clone(&hooked))
}

unsafe fn wake(ptr: *const ()) {
    unsafe {
        wake_by_ref(ptr);
        drop_waker(ptr);
    }
}

unsafe fn wake_by_ref(ptr: *const ()) {
    let hooked = unsafe { borrowed(ptr) };
    hooked.wakes.fetch_add(1, Ordering::SeqCst);
}

unsafe fn drop_waker(ptr: *const ()) {
    drop(unsafe { Arc::from_raw(ptr.cast::<Hooked>()) });
}

fn hooked_waker(hooked: &Arc<Hooked>) -> Waker {
    // SAFETY: the vtable's functions keep `Arc`'s reference count: `clone` adds one, `wake`
    // and `drop` release one, `wake_by_ref` borrows.
    unsafe { Waker::from_raw(raw(hooked.clone())) }
}

/// A future that keeps the waker it was last polled with, and is ready once `ready` is set.
#[derive(Clone, Default)]
struct Event {
    waker: Arc<Mutex<Option<Waker>>>,
    ready: Arc<AtomicBool>,
}

impl Event {
    /// What another thread does when the event happens: wake whoever polled it last.
    fn wake(&self) {
        let waker = self.waker.lock().unwrap().clone();
        waker.expect("polled before it is woken").wake();
    }
}

impl Future for Event {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_wake_while_the_gate_registers_the_task_is_not_lost() {
    let event = Event::default();
    let mut gated = Gated::new(event.clone());
    let hooked = Arc::new(Hooked::default());
    let task = hooked_waker(&hooked);
    let mut cx = Context::from_waker(&task);
    let wakes = || hooked.wakes.load(Ordering::SeqCst);

    assert!(gated.poll_gated(&mut cx).is_pending());
    // Something happens, not yet what the future waits for: the task is woken.
    event.wake();
    assert_eq!(wakes(), 1);

    // At its next poll the gate registers the task's waker again; right then, "another
    // thread" wakes the future once more.
    let again = event.clone();
    *hooked.on_clone.lock().unwrap() = Some(Box::new(move || again.wake()));
    assert!(gated.poll_gated(&mut cx).is_pending());
    assert_eq!(
        hooked.hooks_run.load(Ordering::SeqCst),
        1,
        "the wake ran during the registration"
    );
    assert_eq!(wakes(), 2, "that wake woke the task");
    // Woken, the task polls again.
    assert!(gated.poll_gated(&mut cx).is_pending());

    // Now what the future waits for happens: its wake must reach the task.
    event.ready.store(true, Ordering::SeqCst);
    event.wake();
    assert_eq!(
        wakes(),
        3,
        "the task was woken for the event: no lost wakeup"
    );
    assert!(gated.poll_gated(&mut cx).is_ready());
}
