//! The connection an event stream is written to, as the engine sees it: the [`Outlet`] a
//! connection may lend a stream (through its [`OutletSlot`]) so that the job's feed writes new
//! lines to it itself while the viewer is idle (a line then costs one write per viewer, and no
//! task wakes); [`Wire`], the outlet's state machine over a socket that writes without waiting;
//! the stream's [`Frames`], taken once; and [`StreamEnds`], what the connection writing an
//! event stream needs to end it while its client reads nothing. The engine never sees a socket:
//! the server implements [`WriteNow`] for its own.

pub mod chunks;
mod ends;
mod wire_outlet;

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::{
    Stream, StreamExt,
    stream::{self, BoxStream},
};

pub use ends::{LagWatch, StreamEnds};
pub use wire_outlet::{Claim, MAX_PUT_BYTES, Wire, WriteNow};

/// Marks a response as an event stream (a response extension): its [`Frames`], for the
/// connection to write itself, its [`StreamEnds`], and where the connection may lend it an
/// [`Outlet`].
#[derive(Clone)]
pub struct EventStream {
    /// The stream's rendered frames, taken once.
    pub frames: Frames,
    /// What ends the stream while its client reads nothing.
    pub ends: StreamEnds,
    /// Where the connection may lend the stream an [`Outlet`].
    pub outlet: OutletSlot,
}

/// A stream's connection, as a place its live lines can be written to at once by whichever
/// task has them (the job's feed), in order with everything the stream's own task wrote.
pub trait Outlet: Send + Sync {
    /// Puts `frames` on the connection now, all of them, or none: false when the connection
    /// cannot take them without waiting (its socket is full, a write of the stream's own task
    /// is under way, the client has gone). Once it returns true the frames are the
    /// connection's: what the socket did not take at once, the connection sends before
    /// anything else.
    fn try_put(&self, frames: &[Bytes]) -> bool;
}

/// Where the connection writing a stream lends it an [`Outlet`], once (a connection that
/// leaves the stream to a response body lends none).
#[derive(Clone, Default)]
pub struct OutletSlot(Arc<OnceLock<Arc<dyn Outlet>>>);

impl OutletSlot {
    /// Lends `outlet` to the stream; only the first call counts.
    pub fn lend(&self, outlet: Arc<dyn Outlet>) {
        let _ = self.0.set(outlet);
    }

    /// The outlet, once lent.
    pub fn get(&self) -> Option<&Arc<dyn Outlet>> {
        self.0.get()
    }
}

/// An event stream's frames, taken once: by the connection that writes the stream itself (no
/// body adapters between the frames and the socket), or else by the response body.
#[derive(Clone)]
pub struct Frames(Arc<Mutex<Option<BoxStream<'static, Bytes>>>>);

impl Frames {
    /// Wraps a stream's frames, for one taker.
    pub fn new(frames: BoxStream<'static, Bytes>) -> Self {
        Self(Arc::new(Mutex::new(Some(frames))))
    }

    /// The frames, unless they were taken already.
    pub fn take(&self) -> Option<BoxStream<'static, Bytes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The frames as a response body's stream, taken at its first poll (empty if the
    /// connection took them).
    pub fn into_body(self) -> impl Stream<Item = Bytes> + Send + 'static {
        stream::once(async move { self.take().unwrap_or_else(|| stream::empty().boxed()) })
            .flatten()
    }
}

#[cfg(all(test, buildlogs_loom))]
pub(crate) mod model;
