//! The stall race: a blocked write of a detached stream against everything that ends it (its
//! [`StreamEnds`], shutdown, the client leaving, and no write progress for the stall limit).

use std::{future::Future, io, io::IoSlice, pin::Pin};

use buildlogs_engine::outlet::StreamEnds;
use futures_util::future::BoxFuture;
use tokio::{net::TcpStream, time::Instant};

use super::Limits;

/// Why a detached stream stopped early.
#[derive(Debug)]
pub(super) enum Stop {
    /// The client left, the socket failed, or the body failed.
    Gone,
    /// Shutdown, token expiry, lag limit, revocation or stall while a write was blocked.
    Cut,
}

/// The write side of a detached stream.
pub(super) struct Out<'a> {
    pub(super) socket: &'a TcpStream,
    pub(super) limits: Limits<'a>,
    pub(super) ends: &'a StreamEnds,
    /// [`client_gone`](super::close::client_gone) on this stream's socket.
    pub(super) gone: BoxFuture<'a, ()>,
}

impl Out<'_> {
    /// Writes all of `slices`; while the socket's buffer is full, races the wait against
    /// everything that ends the stream.
    pub(super) async fn send(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<(), Stop> {
        let mut ends: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        // When the socket last took bytes, read from the clock only once a write blocks.
        let mut progress: Option<Instant> = None;
        while !slices.is_empty() {
            match self.socket.try_write_vectored(slices) {
                Ok(0) => return Err(Stop::Gone),
                Ok(n) => {
                    IoSlice::advance_slices(&mut slices, n);
                    progress = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ends = ends.get_or_insert_with(|| Box::pin(self.ends.clone().reached()));
                    let progress = *progress.get_or_insert_with(Instant::now);
                    tokio::select! {
                        biased;
                        ready = self.socket.writable() => ready.map_err(|_| Stop::Gone)?,
                        () = &mut self.gone => return Err(Stop::Gone),
                        () = self.limits.shutdown.cancelled() => return Err(Stop::Cut),
                        () = ends.as_mut() => return Err(Stop::Cut),
                        () = tokio::time::sleep_until(progress + self.limits.stall) => {
                            tracing::info!("a stream's client read nothing for the stall limit; ending it");
                            self.limits.stalled.inc();
                            return Err(Stop::Cut);
                        }
                    }
                }
                Err(_) => return Err(Stop::Gone),
            }
        }
        Ok(())
    }
}
