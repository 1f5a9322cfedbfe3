//! The status monitor: notices followed jobs turning terminal or changing hands. Pub/Sub hints
//! come first; a periodic sweep of every followed job's record is the safety net, because
//! Pub/Sub is lossy and an owner change publishes nothing.

use std::{sync::Weak, time::Duration};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::HubInner;
use crate::ids::JobId;

const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs until `shutdown` or until the hub is gone.
pub(super) async fn monitor(
    hub: Weak<HubInner>,
    mut checks: mpsc::UnboundedReceiver<JobId>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut sweep = tokio::time::interval(poll);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hints = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_connect = tokio::time::Instant::now();
    loop {
        let Some(inner) = hub.upgrade() else { return };
        if hints.is_none() && tokio::time::Instant::now() >= next_connect {
            match inner.store.status_hints().await {
                Ok(stream) => {
                    hints = Some(stream);
                    backoff = Duration::from_millis(100);
                    // Hints sent while we were not listening are gone: look at everything.
                    inner.check(inner.active_feeds()).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "status hint subscription failed; retrying");
                    next_connect = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        drop(inner);
        let reconnect_wait = hints.is_none();
        let hint = async {
            match hints.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        let job = tokio::select! {
            () = shutdown.cancelled() => return,
            hint = hint => match hint {
                Some(job) => Some(job),
                None => {
                    tracing::warn!("status hint subscription lost; reconnecting");
                    hints = None;
                    None
                }
            },
            Some(job) = checks.recv() => Some(job),
            _ = sweep.tick() => {
                let Some(inner) = hub.upgrade() else { return };
                inner.check(inner.active_feeds()).await;
                None
            }
            () = tokio::time::sleep_until(next_connect), if reconnect_wait => None,
        };
        if let Some(job) = job {
            let Some(inner) = hub.upgrade() else { return };
            if let Some(feed) = inner.active_feed(&job) {
                inner.check(vec![feed]).await;
            }
        }
    }
}
