//! One viewer's event stream: start position, resume and `reset`, catch-up from the store, the
//! live feed, heartbeats, `done`, and the end of the stream when the token expires.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use tokio::{
    net::TcpStream,
    sync::broadcast::error::RecvError,
    time::{Instant, Sleep},
};

use crate::{
    api::{
        models::{
            DoneData, FinalStatus, HeartbeatData, ResetData, ResetReason, RetryData, StartData,
            StreamEvent,
        },
        sse::render,
    },
    app::AppState,
    auth::Session,
    config::LiveMode,
    conn::Connections,
    error::ApiError,
    fanout::{FeedMsg, Line, Subscription},
    ids::{JobId, StreamId},
    limits::{OpenStream, RETRY_AFTER_SECS, StreamSlot},
    store::{JobStatus, LiveReader, LogEntry, StoreError, StreamInfo},
};

/// The `retry:` sent first (ms).
pub const RETRY_MS: u32 = 3000;
/// The `retry:` sent right before a stream ends because its token expired (ms): a browser's
/// EventSource is back at once with a fresh token, and its next stream's first `retry:`
/// restores [`RETRY_MS`]. Other ends (shutdown above all) keep the longer wait, so that a fleet
/// of clients does not reconnect all at once.
pub const EXPIRY_RETRY_MS: u32 = 250;
/// Entries per catch-up read from the store.
const CATCH_UP_BATCH: usize = 100;
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

pub enum StreamOutcome {
    NoContent,
    /// Rendered SSE frames.
    Events(BoxStream<'static, Bytes>),
}

/// Whether resuming after `resume` may skip lines that are gone (contract §3, `reset`).
pub fn needs_reset(resume: StreamId, info: Option<&StreamInfo>) -> bool {
    let Some(info) = info else {
        // The job exists but its stream has vanished (expired): only "nothing yet" is honourable.
        return resume != StreamId::ZERO;
    };
    let lost_some = info.entries_added > info.length;
    let before_retained = match info.first_id {
        Some(first) => resume < first,
        None => resume < info.last_generated_id,
    };
    (before_retained && lost_some) || info.max_deleted_id > resume
}

fn final_status(status: &JobStatus) -> FinalStatus {
    if status.as_str() == "failed" {
        FinalStatus::Failed
    } else {
        FinalStatus::Ready
    }
}

/// Opens a stream for `session` on `job`, after checking ownership and the caps.
pub async fn open(
    state: Arc<AppState>,
    session: Session,
    job: JobId,
    resume: Option<StreamId>,
    client: Option<Weak<TcpStream>>,
) -> Result<StreamOutcome, ApiError> {
    let record = state.authorize(&session, &job).await?;
    let info = state.store.stream_info(&job).await?;
    let last_generated = info
        .as_ref()
        .map(|i| i.last_generated_id)
        .unwrap_or_default();
    let position = resume.unwrap_or(last_generated);
    let reset = resume.is_some_and(|id| needs_reset(id, info.as_ref()));

    let mut queue = VecDeque::new();
    queue.push_back(Frame::other(StreamEvent::Retry(RetryData {
        retry_ms: RETRY_MS,
    })));
    queue.push_back(Frame::other(StreamEvent::Start(StartData {
        status: record.status.as_str().to_owned(),
        history_cursor: position.next().to_string(),
        position: position.to_string(),
    })));

    let terminal = record.status.is_terminal();
    let (live, slot, finishing, catching_up) = if terminal {
        match resume {
            None => {
                // Live-only on a finished job: nothing will come.
                queue.push_back(Frame::other(StreamEvent::Done(DoneData {
                    status: final_status(&record.status),
                })));
                (Live::None, None, None, false)
            }
            Some(after) => {
                if state.store.range_after(&job, after, 1).await?.is_empty() {
                    return Ok(StreamOutcome::NoContent);
                }
                (Live::None, None, Some(record.status.clone()), true)
            }
        }
    } else {
        let Some(slot) = state.limits.try_acquire(&session.user_id) else {
            state.metrics.streams_rejected.inc();
            return Err(ApiError::TooManyStreams {
                retry_after_secs: RETRY_AFTER_SECS,
            });
        };
        let live = match state.config.live_mode {
            LiveMode::Fanout => Live::Feed(state.hub.subscribe(&job, last_generated)),
            LiveMode::Naive => Live::Naive(state.store.live_reader().await?),
        };
        (live, Some(slot), None, true)
    };
    if reset {
        queue.push_back(Frame::other(StreamEvent::Reset(ResetData {
            reason: ResetReason::Trimmed,
            oldest_id: info
                .as_ref()
                .and_then(|i| i.first_id)
                .map(|id| id.to_string()),
        })));
    }

    let now = Instant::now();
    let ttl = session
        .valid_until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let expires_at = now + ttl;
    let heartbeat = state.config.heartbeat();
    // Everything that ends a stream from outside, as one future made once: a viewer's wake-ups
    // then cost no timer or waiter registration beyond its own heartbeat.
    let shutdown = state.shutdown.clone().cancelled_owned();
    let ended = Box::pin(async move {
        let gone = async {
            match client {
                Some(socket) => Connections::closed(socket).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = tokio::time::sleep_until(expires_at) => {}
            () = gone => {}
        }
    });
    let mut viewer = Viewer {
        _open: OpenStream::new(state.metrics.clone()),
        _slot: slot,
        job,
        pos: position,
        queue,
        live,
        catching_up,
        lag_budget: None,
        finishing,
        finished: terminal && resume.is_none(),
        heartbeat,
        last_sent: now,
        heartbeat_timer: Box::pin(tokio::time::sleep_until(now + heartbeat)),
        expires_at,
        expired: false,
        ended,
        retry_at: None,
        backoff: Duration::from_millis(100),
        unflushed_lines: 0,
        state,
    };
    if let Live::Feed(sub) = &viewer.live
        && let Some(done) = sub.feed.done()
    {
        viewer.finishing = Some(done.status);
    }
    Ok(StreamOutcome::Events(
        futures_util::stream::unfold(viewer, |mut viewer| async move {
            let frame = viewer.next().await?;
            Some((frame, viewer))
        })
        .boxed(),
    ))
}

/// A rendered frame waiting to be sent; log lines are counted as delivered when sent.
struct Frame {
    bytes: Bytes,
    is_line: bool,
}

impl Frame {
    fn other(event: StreamEvent) -> Self {
        Self {
            bytes: render(event),
            is_line: false,
        }
    }

    fn line(line: &Line) -> Self {
        Self {
            bytes: line.frame.clone(),
            is_line: true,
        }
    }
}

enum Live {
    /// Nothing live: a finished job's remaining lines.
    None,
    /// The job's shared feed (fan-out).
    Feed(Subscription),
    /// This viewer's own blocking reads and status checks (the naive design, for benchmarks).
    Naive(Arc<dyn LiveReader>),
}

struct Viewer {
    state: Arc<AppState>,
    _open: OpenStream,
    _slot: Option<StreamSlot>,
    job: JobId,
    /// The last id queued (or the start position): everything up to it is delivered or queued.
    pos: StreamId,
    queue: VecDeque<Frame>,
    live: Live,
    /// Reading from the store by id until caught up, before (or instead of) the feed.
    catching_up: bool,
    /// Lines a lagging viewer may still catch up on before it is cut off.
    lag_budget: Option<usize>,
    /// The job is terminal: send `done` once caught up.
    finishing: Option<JobStatus>,
    finished: bool,
    heartbeat: Duration,
    last_sent: Instant,
    heartbeat_timer: Pin<Box<Sleep>>,
    expires_at: Instant,
    /// The short `retry:` of an expired token was sent: the stream is over.
    expired: bool,
    /// Shutdown, token expiry or the client leaving.
    ended: Pin<Box<dyn Future<Output = ()> + Send>>,
    retry_at: Option<Instant>,
    backoff: Duration,
    unflushed_lines: u64,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.flush_metrics();
    }
}

enum Wake {
    Msg(Result<FeedMsg, RecvError>),
    Naive(Result<Vec<LogEntry>, StoreError>),
    Heartbeat,
    Retry,
    End,
}

impl Viewer {
    fn queue_entries(&mut self, entries: impl IntoIterator<Item = LogEntry>) {
        for entry in entries {
            if entry.id > self.pos {
                self.pos = entry.id;
                self.queue.push_back(Frame::line(&Line::render(entry)));
            }
        }
    }

    fn queue_lines(&mut self, lines: &[Line]) {
        for line in lines {
            if line.id > self.pos {
                self.pos = line.id;
                self.queue.push_back(Frame::line(line));
            }
        }
    }

    fn finish_if_caught_up(&mut self) {
        if !self.catching_up
            && let Some(status) = self.finishing.take()
        {
            self.queue
                .push_back(Frame::other(StreamEvent::Done(DoneData {
                    status: final_status(&status),
                })));
            self.finished = true;
        }
    }

    /// The token has expired: a short `retry:` the first time, then the end.
    fn expire(&mut self) -> Option<Bytes> {
        if std::mem::replace(&mut self.expired, true) {
            return None;
        }
        Some(render(StreamEvent::Retry(RetryData {
            retry_ms: EXPIRY_RETRY_MS,
        })))
    }

    fn store_failed(&mut self, err: StoreError) {
        tracing::debug!(job = %self.job, error = %err, "stream read failed; retrying");
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY_BACKOFF);
    }

    fn flush_metrics(&mut self) {
        if self.unflushed_lines > 0 {
            self.state
                .metrics
                .lines_delivered
                .inc_by(self.unflushed_lines);
            self.unflushed_lines = 0;
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let now = Instant::now();
            // Checked before every frame, so a busy stream ends on time as surely as an idle one
            // (shutdown and a departed client are noticed at the next wait, between batches).
            if now >= self.expires_at {
                return self.expire();
            }
            if let Some(frame) = self.queue.pop_front() {
                self.last_sent = now;
                if frame.is_line {
                    self.unflushed_lines += 1;
                }
                if self.queue.is_empty() {
                    self.flush_metrics();
                }
                return Some(frame.bytes);
            }
            if self.finished {
                return None;
            }
            if self.catching_up && self.retry_at.is_none_or(|at| now >= at) {
                if self.state.shutdown.is_cancelled() {
                    return None;
                }
                match self
                    .state
                    .store
                    .range_after(&self.job, self.pos, CATCH_UP_BATCH)
                    .await
                {
                    Ok(entries) => {
                        self.retry_at = None;
                        self.backoff = Duration::from_millis(100);
                        let more = entries.len() == CATCH_UP_BATCH;
                        if let Some(budget) = self.lag_budget.as_mut() {
                            if entries.len() > *budget {
                                tracing::info!(job = %self.job, "viewer too far behind; ending its stream");
                                self.state.metrics.slow_viewers_cut.inc();
                                return None;
                            }
                            *budget -= entries.len();
                        }
                        self.queue_entries(entries);
                        if !more {
                            self.catching_up = false;
                            self.lag_budget = None;
                            self.finish_if_caught_up();
                        }
                    }
                    Err(err) => self.store_failed(err),
                }
                continue;
            }

            let wake = {
                let retry_at = self.retry_at;
                let catching_up = self.catching_up;
                let pos = self.pos;
                let job = &self.job;
                let live = &mut self.live;
                let live = async move {
                    if catching_up {
                        return std::future::pending().await;
                    }
                    match live {
                        Live::Feed(sub) => Wake::Msg(sub.rx.recv().await),
                        Live::Naive(reader) => Wake::Naive(
                            reader
                                .read(
                                    &[(job.clone(), pos)],
                                    CATCH_UP_BATCH,
                                    Duration::from_secs(1),
                                )
                                .await
                                .map(|batches| batches.into_iter().flat_map(|(_, e)| e).collect()),
                        ),
                        Live::None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = &mut self.ended => Wake::End,
                    () = async { tokio::time::sleep_until(retry_at.unwrap_or(now)).await }, if retry_at.is_some() => Wake::Retry,
                    wake = live => wake,
                    () = &mut self.heartbeat_timer => Wake::Heartbeat,
                }
            };
            match wake {
                Wake::End if Instant::now() >= self.expires_at => return self.expire(),
                Wake::End => return None,
                Wake::Retry => {}
                Wake::Heartbeat => {
                    // The timer is not re-armed on every frame: when it fires, it either sends a
                    // heartbeat or moves to a heartbeat interval after the last frame.
                    let due = self.last_sent + self.heartbeat;
                    if Instant::now() >= due {
                        self.queue
                            .push_back(Frame::other(StreamEvent::Heartbeat(HeartbeatData {})));
                        self.heartbeat_timer
                            .as_mut()
                            .reset(Instant::now() + self.heartbeat);
                    } else {
                        self.heartbeat_timer.as_mut().reset(due);
                    }
                }
                Wake::Msg(Ok(FeedMsg::Lines { after, lines })) => {
                    if after > self.pos {
                        // Lines between our position and this batch came before we subscribed
                        // or while we lagged: read them by id.
                        self.catching_up = true;
                    } else {
                        self.queue_lines(&lines);
                    }
                }
                Wake::Msg(Ok(FeedMsg::Done(done))) => {
                    self.finishing = Some(done.status);
                    self.catching_up = done.last > self.pos;
                    self.finish_if_caught_up();
                }
                Wake::Msg(Err(RecvError::Lagged(_))) => {
                    self.catching_up = true;
                    self.lag_budget
                        .get_or_insert(self.state.config.viewer_max_lag);
                }
                Wake::Msg(Err(RecvError::Closed)) => return None,
                Wake::Naive(Ok(entries)) => {
                    self.queue_entries(entries);
                    // The naive design checks the job's status on every loop, per viewer.
                    match self
                        .state
                        .store
                        .statuses(std::slice::from_ref(&self.job))
                        .await
                    {
                        Ok(statuses) => {
                            if let Some(Some(status)) = statuses.into_iter().next()
                                && status.is_terminal()
                            {
                                self.finishing = Some(status);
                                self.catching_up = true;
                            }
                        }
                        Err(err) => self.store_failed(err),
                    }
                }
                Wake::Naive(Err(err)) => self.store_failed(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        length: u64,
        first: Option<(u64, u64)>,
        last: (u64, u64),
        added: u64,
        deleted: (u64, u64),
    ) -> StreamInfo {
        StreamInfo {
            length,
            first_id: first.map(|(a, b)| StreamId::new(a, b)),
            last_generated_id: StreamId::new(last.0, last.1),
            max_deleted_id: StreamId::new(deleted.0, deleted.1),
            entries_added: added,
        }
    }

    #[test]
    fn reset_rule() {
        let id = |a, b| StreamId::new(a, b);
        // Nothing lost: never a reset.
        let intact = info(3, Some((10, 0)), (12, 0), 3, (0, 0));
        assert!(!needs_reset(id(0, 0), Some(&intact)));
        assert!(!needs_reset(id(11, 0), Some(&intact)));
        // Trimmed: resuming before the first retained entry is a reset, after it is not.
        let trimmed = info(3, Some((10, 0)), (12, 0), 9, (0, 0));
        assert!(needs_reset(id(5, 0), Some(&trimmed)));
        assert!(!needs_reset(id(10, 0), Some(&trimmed)));
        // Emptied by trimming.
        let emptied = info(0, None, (12, 0), 9, (0, 0));
        assert!(needs_reset(id(5, 0), Some(&emptied)));
        assert!(!needs_reset(id(12, 0), Some(&emptied)));
        // XDEL after the resume point.
        let deleted = info(3, Some((10, 0)), (12, 0), 4, (11, 5));
        assert!(needs_reset(id(11, 0), Some(&deleted)));
        assert!(!needs_reset(id(11, 5), Some(&deleted)));
        // Vanished stream.
        assert!(needs_reset(id(1, 0), None));
        assert!(!needs_reset(id(0, 0), None));
    }
}
