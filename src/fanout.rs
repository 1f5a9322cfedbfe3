//! The fan-out of live lines: one shared feed per followed job per instance.
//!
//! A fixed set of reader tasks (`REDIS_LIVE_READERS`) each run one blocking multi-stream read
//! over all the jobs assigned to them, and broadcast each batch to the job's feed. A status
//! monitor watches for jobs turning terminal (Pub/Sub hints, confirmed against the job record,
//! with a periodic sweep as the safety net because Pub/Sub is lossy); the job's reader then
//! drains what is left and marks the feed done. So Redis work per line does not depend on the
//! number of viewers, and viewers never hold a Redis connection.
//!
//! Every batch says which id it follows (`after`). A viewer that sees a batch start past its own
//! position, or that lagged behind the bounded broadcast ring, catches up from the store by id:
//! slow viewers cost store reads, never memory, and never slow anyone else.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{
        models::{LogLine, StreamEvent},
        sse::render,
    },
    ids::{JobId, StreamId},
    store::{JobStatus, LiveReader, LogEntry, LogStore},
    telemetry::Metrics,
};

/// Batches a feed keeps for viewers that are momentarily behind; past it they catch up by id.
/// With [`READ_COUNT`] this bounds a feed's memory to 16 × 200 rendered lines however many
/// viewers stall: about 7 MB for a job spewing lines at the runner's 2,000-character cap, a few
/// hundred KB for ordinary output.
const FEED_CAPACITY: usize = 16;
/// Most entries one read returns per stream.
const READ_COUNT: usize = 200;
/// How long one blocking read waits. Membership changes interrupt it, so this only bounds how
/// long a dead connection can go unnoticed.
const READ_BLOCK: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A log line as it goes on the wire, rendered once for every viewer.
#[derive(Clone, Debug)]
pub struct Line {
    pub id: StreamId,
    pub frame: Bytes,
}

impl Line {
    pub fn render(entry: LogEntry) -> Self {
        Self {
            id: entry.id,
            frame: render(StreamEvent::Log(LogLine::from(entry))),
        }
    }
}

/// What a job's feed carries.
#[derive(Clone, Debug)]
pub enum FeedMsg {
    /// Consecutive lines that directly follow `after` in the stream.
    Lines { after: StreamId, lines: Arc<[Line]> },
    /// The job is terminal and every line up to `last` has been sent.
    Done(Done),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub status: JobStatus,
    pub last: StreamId,
}

/// One job's live feed, shared by all of its viewers on this instance.
pub struct Feed {
    job: JobId,
    reader: usize,
    tx: broadcast::Sender<FeedMsg>,
    done: Mutex<Option<Done>>,
}

impl Feed {
    /// Set when the job has finished; checked after subscribing, so no viewer misses it.
    pub fn done(&self) -> Option<Done> {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

enum Command {
    Watch { feed: Arc<Feed>, from: StreamId },
    Unwatch(JobId),
    Terminal(JobId, JobStatus),
}

struct HubInner {
    store: Arc<dyn LogStore>,
    feeds: Mutex<HashMap<JobId, Arc<Feed>>>,
    readers: Vec<mpsc::UnboundedSender<Command>>,
    checks: mpsc::UnboundedSender<JobId>,
    metrics: Arc<Metrics>,
}

/// The registry of live feeds and the tasks that fill them.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// A viewer's hold on a feed; dropping it lets the feed stop when it was the last.
pub struct Subscription {
    pub feed: Arc<Feed>,
    pub rx: broadcast::Receiver<FeedMsg>,
    hub: Arc<HubInner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Replace the receiver first so the count below no longer includes ours.
        let rx = std::mem::replace(&mut self.rx, broadcast::channel(1).1);
        drop(rx);
        self.hub.release(&self.feed);
    }
}

impl Hub {
    /// Starts the reader tasks and the status monitor; they stop when `shutdown` is cancelled.
    pub async fn start(
        store: Arc<dyn LogStore>,
        readers: usize,
        status_poll: Duration,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..readers.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let (checks_tx, checks_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(HubInner {
            store: store.clone(),
            feeds: Mutex::default(),
            readers: senders,
            checks: checks_tx,
            metrics: metrics.clone(),
        });
        for rx in receivers {
            let live = store.live_reader().await?;
            tokio::spawn(
                ReaderTask {
                    store: store.clone(),
                    live,
                    commands: rx,
                    jobs: HashMap::new(),
                    shutdown: shutdown.clone(),
                }
                .run(),
            );
        }
        tokio::spawn(monitor(
            Arc::downgrade(&inner),
            checks_rx,
            status_poll,
            shutdown,
        ));
        Ok(Self { inner })
    }

    /// Subscribes to the job's feed, creating it if needed. `from` is an id the caller has
    /// already read the store up to (the stream's last id, as the caller saw it before
    /// subscribing): a new feed reads from there, so nothing between is lost.
    pub fn subscribe(&self, job: &JobId, from: StreamId) -> Subscription {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(job) {
            return Subscription {
                feed: feed.clone(),
                rx: feed.tx.subscribe(),
                hub: self.inner.clone(),
            };
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        job.hash(&mut hasher);
        let reader = (hasher.finish() % self.inner.readers.len() as u64) as usize;
        let (tx, rx) = broadcast::channel(FEED_CAPACITY);
        let feed = Arc::new(Feed {
            job: job.clone(),
            reader,
            tx,
            done: Mutex::new(None),
        });
        feeds.insert(job.clone(), feed.clone());
        self.inner.metrics.live_jobs.set(feeds.len() as i64);
        drop(feeds);
        let _ = self.inner.readers[reader].send(Command::Watch {
            feed: feed.clone(),
            from,
        });
        // The job may have turned terminal before the feed existed to hear about it.
        let _ = self.inner.checks.send(job.clone());
        Subscription {
            feed,
            rx,
            hub: self.inner.clone(),
        }
    }

    /// Jobs with a live feed on this instance.
    pub fn live_jobs(&self) -> usize {
        self.inner
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl HubInner {
    fn release(&self, feed: &Arc<Feed>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        // Under the registry lock nobody can subscribe concurrently, so a zero count is final.
        if feed.tx.receiver_count() == 0
            && feeds.get(&feed.job).is_some_and(|f| Arc::ptr_eq(f, feed))
        {
            feeds.remove(&feed.job);
            self.metrics.live_jobs.set(feeds.len() as i64);
            drop(feeds);
            let _ = self.readers[feed.reader].send(Command::Unwatch(feed.job.clone()));
        }
    }

    fn active_jobs(&self) -> Vec<(JobId, usize)> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .values()
            .filter(|f| f.done().is_none())
            .map(|f| (f.job.clone(), f.reader))
            .collect()
    }

    fn reader_of(&self, job: &JobId) -> Option<usize> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .get(job)
            .filter(|f| f.done().is_none())
            .map(|f| f.reader)
    }

    /// Checks the statuses of `jobs` and tells their readers about terminal ones.
    async fn check(&self, jobs: Vec<(JobId, usize)>) {
        if jobs.is_empty() {
            return;
        }
        let ids: Vec<JobId> = jobs.iter().map(|(j, _)| j.clone()).collect();
        match self.store.statuses(&ids).await {
            Ok(statuses) => {
                for ((job, reader), status) in jobs.into_iter().zip(statuses) {
                    if let Some(status) = status.filter(JobStatus::is_terminal) {
                        let _ = self.readers[reader].send(Command::Terminal(job, status));
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "status check failed"),
        }
    }
}

/// Watches for jobs turning terminal: Pub/Sub hints first, a periodic sweep as the safety net.
async fn monitor(
    hub: std::sync::Weak<HubInner>,
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
                    inner.check(inner.active_jobs()).await;
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
        tokio::select! {
            () = shutdown.cancelled() => return,
            hint = hint => match hint {
                Some(job) => {
                    let Some(inner) = hub.upgrade() else { return };
                    if let Some(reader) = inner.reader_of(&job) {
                        inner.check(vec![(job, reader)]).await;
                    }
                }
                None => {
                    tracing::warn!("status hint subscription lost; reconnecting");
                    hints = None;
                }
            },
            Some(job) = checks.recv() => {
                let Some(inner) = hub.upgrade() else { return };
                if let Some(reader) = inner.reader_of(&job) {
                    inner.check(vec![(job, reader)]).await;
                }
            }
            _ = sweep.tick() => {
                let Some(inner) = hub.upgrade() else { return };
                inner.check(inner.active_jobs()).await;
            }
            () = tokio::time::sleep_until(next_connect), if reconnect_wait => {}
        }
    }
}

struct Watched {
    feed: Arc<Feed>,
    cursor: StreamId,
    terminal: Option<JobStatus>,
}

struct ReaderTask {
    store: Arc<dyn LogStore>,
    live: Arc<dyn LiveReader>,
    commands: mpsc::UnboundedReceiver<Command>,
    jobs: HashMap<JobId, Watched>,
    shutdown: CancellationToken,
}

impl ReaderTask {
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Watch { feed, from } => {
                self.jobs.insert(
                    feed.job.clone(),
                    Watched {
                        feed,
                        cursor: from,
                        terminal: None,
                    },
                );
            }
            Command::Unwatch(job) => {
                // A feed recreated since is a different feed: keep that one.
                if self
                    .jobs
                    .get(&job)
                    .is_some_and(|w| w.feed.tx.receiver_count() == 0)
                {
                    self.jobs.remove(&job);
                }
            }
            Command::Terminal(job, status) => {
                if let Some(w) = self.jobs.get_mut(&job) {
                    w.terminal = Some(status);
                }
            }
        }
    }

    fn publish(watched: &mut Watched, entries: Vec<LogEntry>) {
        let Some(last) = entries.last().map(|e| e.id) else {
            return;
        };
        let after = watched.cursor;
        watched.cursor = last;
        // No receivers is fine: the feed is about to be released.
        let _ = watched.feed.tx.send(FeedMsg::Lines {
            after,
            lines: entries.into_iter().map(Line::render).collect(),
        });
    }

    /// Sends what is left of terminal jobs, then marks their feeds done.
    async fn finish_terminal(&mut self) -> Result<(), crate::store::StoreError> {
        let finished: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, w)| w.terminal.is_some())
            .map(|(j, _)| j.clone())
            .collect();
        for job in finished {
            let watched = self.jobs.get_mut(&job).expect("listed above");
            loop {
                let entries = self
                    .store
                    .range_after(&job, watched.cursor, READ_COUNT)
                    .await?;
                let more = entries.len() == READ_COUNT;
                Self::publish(watched, entries);
                if !more {
                    break;
                }
            }
            let done = Done {
                status: watched.terminal.clone().expect("filtered above"),
                last: watched.cursor,
            };
            *watched.feed.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(done.clone());
            let _ = watched.feed.tx.send(FeedMsg::Done(done));
            self.jobs.remove(&job);
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd);
            }
            if let Err(err) = self.finish_terminal().await {
                tracing::warn!(error = %err, "draining a finished job failed; retrying");
                if self.pause(&mut backoff).await {
                    return;
                }
                continue;
            }
            if self.jobs.is_empty() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => self.apply(cmd),
                        None => return,
                    },
                }
                continue;
            }
            let cursors: Vec<(JobId, StreamId)> = self
                .jobs
                .iter()
                .map(|(j, w)| (j.clone(), w.cursor))
                .collect();
            let mut pending = Vec::new();
            let result = {
                let read = self.live.read(&cursors, READ_COUNT, READ_BLOCK);
                tokio::pin!(read);
                let mut woken = false;
                let mut retry = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tokio::select! {
                        biased;
                        result = &mut read => break result,
                        () = self.shutdown.cancelled() => return,
                        Some(cmd) = self.commands.recv() => {
                            pending.push(cmd);
                            if !woken {
                                woken = self.live.interrupt().await;
                            }
                        }
                        // The read may not have reached the server yet when a command came in:
                        // keep trying until it is woken.
                        _ = retry.tick(), if !pending.is_empty() && !woken => {
                            woken = self.live.interrupt().await;
                        }
                    }
                }
            };
            match result {
                Ok(batches) => {
                    backoff = Duration::from_millis(50);
                    for (job, entries) in batches {
                        if let Some(watched) = self.jobs.get_mut(&job) {
                            Self::publish(watched, entries);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "live read failed; retrying");
                    for cmd in pending.drain(..) {
                        self.apply(cmd);
                    }
                    if self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
            for cmd in pending {
                self.apply(cmd);
            }
        }
    }

    /// Waits out a backoff step; true when shutting down.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = self.shutdown.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        }
    }
}
