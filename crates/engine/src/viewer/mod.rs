//! One viewer's event stream, in two steps: [`open`](mod@open) decides what the request gets
//! (the pure rules of [`open::decide`], then a slot under the caps), and [`events`] runs it:
//! catch-up from the store by id, the live feed, heartbeats, `done`, and its end at token
//! expiry or shutdown.
//!
//! What a stream needs is a narrow [`StreamContext`] (store, hub, caps, metrics, settings), not
//! the whole app; what it produces is rendered frames plus the [`StreamEnds`] the connection
//! writing them needs.

mod events;
pub mod open;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio_util::sync::CancellationToken;

pub use open::{Decision, decide};

use crate::{
    error::ApiError,
    fanout::Hub,
    ids::{JobId, StreamId},
    limits::{RETRY_AFTER_SECS, StreamLimits},
    metrics::Metrics,
    outlet::{OutletSlot, StreamEnds},
    store::{LogStore, job_owned_by},
};

/// The `retry:` sent first (ms).
pub const RETRY_MS: u32 = 3000;
/// The `retry:` sent right before a stream ends because its token expired (ms): a browser's
/// EventSource is back at once with a fresh token, and its next stream's first `retry:`
/// restores [`RETRY_MS`]. Other ends (shutdown above all) keep the longer wait, so that a fleet
/// of clients does not reconnect all at once.
pub const EXPIRY_RETRY_MS: u32 = 250;

/// How streams run.
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// A quiet stream sends a heartbeat this often.
    pub heartbeat: Duration,
}

/// What a stream needs from the app.
pub struct StreamContext {
    pub store: Arc<dyn LogStore>,
    pub hub: Hub,
    pub limits: Arc<StreamLimits>,
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: every stream ends.
    pub shutdown: CancellationToken,
    pub settings: StreamSettings,
}

/// Who opens a stream, and until when their token is good (`exp` plus the leeway).
#[derive(Clone, Debug)]
pub struct Requester {
    pub user_id: String,
    pub valid_until: std::time::SystemTime,
}

/// An opened stream request.
pub enum Opened {
    /// 204 No Content.
    NoContent,
    /// Rendered frames, what ends the stream while its client reads nothing, and where its
    /// connection may lend it an outlet for the feed to write live lines to.
    Events(BoxStream<'static, Bytes>, StreamEnds, OutletSlot),
}

/// Opens a stream of `job` for `requester`: ownership (404), the open decision, the caps (429).
pub async fn open(
    ctx: &Arc<StreamContext>,
    requester: Requester,
    job: JobId,
    resume: Option<StreamId>,
) -> Result<Opened, ApiError> {
    let record = job_owned_by(&*ctx.store, &job, &requester.user_id)
        .await?
        .ok_or(ApiError::JobNotFound)?;
    let info = ctx.store.stream_info(&job).await?;
    match decide(&record, info.as_ref(), resume) {
        Decision::NoContent => Ok(Opened::NoContent),
        Decision::StartThenDone { start, status } => {
            Ok(events::start_then_done(ctx, &requester, start, status))
        }
        Decision::Stream(plan) => {
            let Some(slot) = ctx.limits.try_acquire(&requester.user_id) else {
                ctx.metrics.streams_rejected.inc();
                return Err(ApiError::TooManyStreams {
                    retry_after_secs: RETRY_AFTER_SECS,
                });
            };
            Ok(events::run(ctx, &requester, job, plan, slot))
        }
    }
}
