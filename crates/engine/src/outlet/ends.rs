//! [`StreamEnds`]: what must end an event stream even while its client reads nothing (token
//! expiry, the lag limit, revocation), for the connection that writes it to race its blocked
//! writes against.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::metrics::counter::Counter;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

/// What must end an event stream even while nobody takes its frames: once a client stops
/// reading, the writes block and the stream itself is no longer polled, so the connection that
/// writes it races its blocked writes against [`StreamEnds::reached`] (and against shutdown,
/// its client leaving and its own stall limit, which it knows itself).
#[derive(Clone, Debug)]
pub struct StreamEnds {
    /// The token's `exp` plus the leeway.
    pub expires_at: Instant,
    /// The lag limit, for a stream following a live feed.
    pub lag: Option<LagWatch>,
}

/// How far a viewer is behind its feed, in lines: the feed's count of published lines against
/// the count when the viewer last took from it.
#[derive(Clone, Debug)]
pub struct LagWatch {
    /// Lines the feed has published so far.
    pub head: watch::Receiver<u64>,
    /// Cancelled when the feed is revoked (the job's record vanished or changed owner): the
    /// stream ends even while its writes are blocked.
    pub revoked: CancellationToken,
    /// `head` when the viewer last took lines from the feed.
    pub mark: Arc<AtomicU64>,
    /// Lines the viewer may fall behind before its stream is ended.
    pub limit: u64,
    /// Counts the streams ended so (`buildlogs_slow_viewers_disconnected_total`).
    pub cut: Counter,
}

impl StreamEnds {
    /// Resolves once the token has expired, the viewer has fallen too far behind, or its feed
    /// was revoked.
    pub async fn reached(mut self) {
        let lag = async {
            let Some(lag) = self.lag.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                if lag.revoked.is_cancelled() {
                    return;
                }
                let head = *lag.head.borrow_and_update();
                if head.saturating_sub(lag.mark.load(Ordering::Relaxed)) > lag.limit {
                    tracing::info!("a blocked viewer fell too far behind; ending its stream");
                    lag.cut.inc();
                    return;
                }
                tokio::select! {
                    () = lag.revoked.cancelled() => return,
                    changed = lag.head.changed() => if changed.is_err() {
                        // The feed is gone (its job finished): it publishes nothing more, and
                        // a feed that is gone can no longer be revoked.
                        return std::future::pending().await;
                    },
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(self.expires_at) => {}
            () = lag => {}
        }
    }
}
