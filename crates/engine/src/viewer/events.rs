//! The viewer loop: one stream's frames, from the open decision's plan to its end.
//!
//! It reads the store by id until caught up (joining mid-burst, resuming, or after lagging
//! behind the feed), then follows the job's feed; `done` comes only after that drain. A stream
//! ends at `done`, when its token expires (after a short `retry:`), at shutdown, when the job's
//! record vanishes or changes owner, or when it falls too far behind.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{
    FutureExt, StreamExt,
    future::{BoxFuture, Fuse},
};
use tokio::time::{Instant, Sleep};

use super::{
    EXPIRY_RETRY_MS, Opened, RETRY_MS, Requester, StreamContext,
    open::{Plan, Start, final_status},
};
use crate::{
    fanout::{Line, Next, Subscription},
    ids::{JobId, StreamId},
    limits::{OpenStream, StreamSlot},
    outlet::{OutletSlot, StreamEnds},
    store::{JobStatus, LogEntry, StoreError},
    wire::{
        frames::frame,
        payload::{DoneData, FinalStatus, HeartbeatData, RetryData, StartData, StreamEvent},
    },
};

/// Entries per catch-up read from the store.
const CATCH_UP_BATCH: usize = 100;
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

fn retry(retry_ms: u32) -> Bytes {
    frame(&StreamEvent::Retry(RetryData { retry_ms }))
}

fn start_frame(start: &Start) -> Bytes {
    frame(&StreamEvent::Start(StartData {
        status: start.status.as_str().to_owned(),
        history_cursor: start.position.next().to_string(),
        position: start.position.to_string(),
    }))
}

fn done_frame(status: FinalStatus) -> Bytes {
    frame(&StreamEvent::Done(DoneData { status }))
}

/// When a token valid until `valid_until` expires, on the runtime's clock.
fn expiry(requester: &Requester) -> Instant {
    let ttl = requester
        .valid_until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + ttl
}

/// `retry:`, `start`, `done`: a finished job, connected to live.
pub(super) fn start_then_done(
    ctx: &Arc<StreamContext>,
    requester: &Requester,
    start: Start,
    status: FinalStatus,
) -> Opened {
    let frames = [retry(RETRY_MS), start_frame(&start), done_frame(status)];
    let open = OpenStream::new(ctx.metrics.clone());
    let frames = futures_util::stream::iter(frames).map(move |frame| {
        let _open = &open;
        frame
    });
    Opened::Events(
        frames.boxed(),
        StreamEnds {
            expires_at: expiry(requester),
            lag: None,
        },
        OutletSlot::default(),
    )
}

/// Runs a stream that sends lines, on a slot.
pub(super) fn run(
    ctx: &Arc<StreamContext>,
    requester: &Requester,
    job: JobId,
    plan: Plan,
    slot: StreamSlot,
) -> Opened {
    let Plan {
        start,
        reset,
        live_from,
        finished,
    } = plan;
    let mut queue = VecDeque::new();
    queue.push_back(Frame::other(retry(RETRY_MS)));
    queue.push_back(Frame::other(start_frame(&start)));
    if let Some(reset) = reset {
        queue.push_back(Frame::other(frame(&StreamEvent::Reset(reset))));
    }
    let live = finished
        .is_none()
        .then(|| ctx.hub.subscribe(&job, &requester.user_id, live_from));
    let now = Instant::now();
    let expires_at = expiry(requester);
    let ends = StreamEnds {
        expires_at,
        lag: live.as_ref().and_then(Subscription::lag_watch),
    };
    let heartbeat = ctx.settings.heartbeat;
    // Everything that ends a stream from outside, and its heartbeat, as one future made once
    // and gated: a viewer's wake-ups for lines then poll none of it, only check one flag.
    let shutdown = ctx.shutdown.clone().cancelled_owned();
    let ended = async move {
        tokio::select! {
            () = shutdown => {}
            () = tokio::time::sleep_until(expires_at) => {}
        }
    }
    .boxed()
    .fuse();
    let timers = Timers {
        ended,
        heartbeat: Box::pin(tokio::time::sleep_until(now + heartbeat)),
    };
    let outlet = OutletSlot::default();
    let viewer = Viewer {
        ctx: ctx.clone(),
        outlet: outlet.clone(),
        _open: OpenStream::new(ctx.metrics.clone()),
        _slot: slot,
        job,
        pos: start.position,
        queue,
        live,
        catching_up: true,
        lag_budget: None,
        finishing: finished,
        finished: false,
        heartbeat,
        last_sent: now,
        expires_at,
        expired: false,
        timers,
        retry_at: None,
        backoff: Duration::from_millis(100),
        unflushed_lines: 0,
    };
    let frames = futures_util::stream::unfold(viewer, |mut viewer| async move {
        let frame = viewer.next().await?;
        Some((frame, viewer))
    });
    Opened::Events(frames.boxed(), ends, outlet)
}

/// A rendered frame waiting to be sent; log lines are counted as delivered when sent.
struct Frame {
    bytes: Bytes,
    is_line: bool,
}

impl Frame {
    fn other(bytes: Bytes) -> Self {
        Self {
            bytes,
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

struct Viewer {
    ctx: Arc<StreamContext>,
    /// Where the connection lends the stream its socket, for the feed to write lines to.
    outlet: OutletSlot,
    _open: OpenStream,
    _slot: StreamSlot,
    job: JobId,
    /// The last id queued (or the start position): everything up to it is delivered or queued.
    pos: StreamId,
    queue: VecDeque<Frame>,
    /// The job's feed; `None` for a finished job's remaining lines.
    live: Option<Subscription>,
    /// Reading from the store by id until caught up, before (or instead of) the feed.
    catching_up: bool,
    /// Lines a lagging viewer may still catch up on before it is cut off.
    lag_budget: Option<usize>,
    /// The job is terminal: send `done` once caught up.
    finishing: Option<JobStatus>,
    finished: bool,
    heartbeat: Duration,
    last_sent: Instant,
    expires_at: Instant,
    /// The short `retry:` of an expired token was sent: the stream is over.
    expired: bool,
    /// Shutdown or token expiry, and the heartbeat.
    timers: Timers,
    retry_at: Option<Instant>,
    backoff: Duration,
    unflushed_lines: u64,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.flush_metrics();
    }
}

/// A stream's end from outside (shutdown, token expiry) and its heartbeat timer.
struct Timers {
    ended: Fuse<BoxFuture<'static, ()>>,
    heartbeat: Pin<Box<Sleep>>,
}

enum Tick {
    End,
    Heartbeat,
}

impl Timers {
    fn reset_heartbeat(&mut self, at: Instant) {
        self.heartbeat.as_mut().reset(at);
    }
}

impl Future for Timers {
    type Output = Tick;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Tick> {
        if self.ended.poll_unpin(cx).is_ready() {
            return Poll::Ready(Tick::End);
        }
        self.heartbeat.as_mut().poll(cx).map(|()| Tick::Heartbeat)
    }
}

enum Wake {
    Live(Next),
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
                .push_back(Frame::other(done_frame(final_status(&status))));
            self.finished = true;
        }
    }

    /// The token has expired: a short `retry:` the first time, then the end.
    fn expire(&mut self) -> Option<Bytes> {
        if std::mem::replace(&mut self.expired, true) {
            return None;
        }
        Some(retry(EXPIRY_RETRY_MS))
    }

    fn store_failed(&mut self, err: StoreError) {
        tracing::debug!(job = %self.job, error = %err, "stream read failed; retrying");
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY_BACKOFF);
    }

    fn flush_metrics(&mut self) {
        if self.unflushed_lines > 0 {
            self.ctx
                .metrics
                .lines_delivered
                .inc_by(self.unflushed_lines);
            self.unflushed_lines = 0;
        }
    }

    /// Reads the next batch from the store; false when the stream must end (too far behind).
    async fn catch_up(&mut self) -> bool {
        match self
            .ctx
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
                        self.ctx.metrics.slow_viewers_cut.inc();
                        return false;
                    }
                    *budget -= entries.len();
                }
                self.queue_entries(entries);
                if !more {
                    self.catching_up = false;
                    self.lag_budget = None;
                    if let Some(live) = &self.live {
                        live.caught_up();
                    }
                    self.finish_if_caught_up();
                }
            }
            Err(err) => self.store_failed(err),
        }
        true
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let now = Instant::now();
            // Checked before every frame, so a busy stream ends on time as surely as an idle one
            // (shutdown is noticed at the next wait, between batches).
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
                if self.ctx.shutdown.is_cancelled() || !self.catch_up().await {
                    return None;
                }
                continue;
            }

            // Idle on the feed: it writes new lines to the connection itself, if the
            // connection lent an outlet, and wakes this task only when it cannot.
            let armed = match (&self.live, self.outlet.get()) {
                (Some(live), Some(outlet)) if !self.catching_up => {
                    live.arm(outlet, self.pos, self.expires_at);
                    true
                }
                _ => false,
            };
            let wake = {
                let retry_at = self.retry_at;
                let pos = self.pos;
                let live = match (&mut self.live, self.catching_up) {
                    (Some(live), false) => Some(live),
                    _ => None,
                };
                let live = async move {
                    match live {
                        Some(live) => live.next(pos).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    tick = &mut self.timers => match tick {
                        Tick::End => Wake::End,
                        Tick::Heartbeat => Wake::Heartbeat,
                    },
                    () = async { tokio::time::sleep_until(retry_at.unwrap_or(now)).await }, if retry_at.is_some() => Wake::Retry,
                    next = live => Wake::Live(next),
                }
            };
            if armed
                && let Some(live) = &self.live
                && let Some((pos, at)) = live.disarm()
            {
                self.pos = self.pos.max(pos);
                self.last_sent = self.last_sent.max(at);
            }
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
                            .push_back(Frame::other(frame(&StreamEvent::Heartbeat(
                                HeartbeatData {},
                            ))));
                        self.timers.reset_heartbeat(Instant::now() + self.heartbeat);
                    } else {
                        self.timers.reset_heartbeat(due);
                    }
                }
                Wake::Live(Next::Lines(batch)) => self.queue_lines(batch.lines()),
                Wake::Live(Next::Gap { budget }) => {
                    self.catching_up = true;
                    if let Some(budget) = budget {
                        self.lag_budget.get_or_insert(budget);
                    }
                }
                Wake::Live(Next::Done(done)) => {
                    self.finishing = Some(done.status);
                    self.catching_up = done.last > self.pos;
                    self.finish_if_caught_up();
                }
                Wake::Live(Next::Revoked) => return None,
            }
        }
    }
}
