//! The registry of live feeds, one per followed job, and the subscriptions viewers hold on them.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    Batch, Done, Line, Next, Subscription,
    channel::{Channel, Lagged, Receiver},
    monitor::monitor,
    reader::{Command, ReaderTask},
};
use crate::{
    ids::{JobId, StreamId},
    metrics::Metrics,
    outlet::{LagWatch, Outlet},
    store::{Job, LogStore},
};

/// Batches a feed keeps for viewers that are momentarily behind; past it they catch up by id.
/// With the readers' batch size this bounds a feed's memory to 16 × 200 rendered lines however
/// many viewers stall: about 7 MB for a job spewing lines at the runner's 2,000-character cap,
/// a few hundred KB for ordinary output.
const FEED_CAPACITY: usize = 16;

/// What a job's feed carries.
#[derive(Clone, Debug)]
pub(super) enum FeedMsg {
    /// Consecutive lines that directly follow `after` in the stream; `head` counts every line
    /// the feed has published, these included.
    Lines {
        after: StreamId,
        lines: Arc<[Line]>,
        head: u64,
    },
    /// The job is terminal and every line up to `last` has been sent.
    Done(Done),
    /// The job's record vanished or changed owner.
    Revoked,
}

/// One job's live feed, shared by all of its viewers on this instance (who are all its owner).
pub(super) struct Feed {
    pub(super) job: JobId,
    /// The owner the feed's viewers were authorised as.
    pub(super) owner: String,
    pub(super) reader: usize,
    chan: Arc<Channel>,
    /// Set when the job has finished; checked after subscribing, so no viewer misses it.
    pub(super) done: Mutex<Option<Done>>,
    /// Lines published so far, for the lag limit of viewers whose writes are blocked.
    pub(super) head: watch::Sender<u64>,
    /// Cancelled when the feed is revoked: it ends the streams of viewers whose writes are
    /// blocked (and who would not take the `Revoked` message until their client reads).
    revoked: CancellationToken,
}

impl Feed {
    pub(super) fn done(&self) -> Option<Done> {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes lines that directly follow `after`.
    pub(super) async fn publish(&self, after: StreamId, lines: Arc<[Line]>) {
        let mut head = 0;
        self.head.send_modify(|h| {
            *h += lines.len() as u64;
            head = *h;
        });
        // No receivers is fine: the feed is about to be released.
        self.chan
            .send_parallel(FeedMsg::Lines { after, lines, head })
            .await;
    }

    pub(super) fn finish(&self, done: Done) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(done.clone());
        self.chan.send(FeedMsg::Done(done));
    }

    fn revoke(&self) {
        self.revoked.cancel();
        self.chan.send(FeedMsg::Revoked);
    }
}

pub(super) struct HubInner {
    pub(super) store: Arc<dyn LogStore>,
    feeds: Mutex<HashMap<JobId, Arc<Feed>>>,
    pub(super) readers: Vec<mpsc::UnboundedSender<Command>>,
    checks: mpsc::UnboundedSender<JobId>,
    metrics: Arc<Metrics>,
    max_lag: usize,
    #[cfg(feature = "bench-naive")]
    naive: bool,
}

/// The registry of live feeds and the tasks that fill them.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// How the hub runs.
#[derive(Clone, Copy, Debug)]
pub struct HubSettings {
    /// Reader tasks, each with its own blocking connection.
    pub readers: usize,
    /// How often every followed job's record is checked (the safety net under the hints).
    pub status_poll: Duration,
    /// Lines a viewer may fall behind its feed before its stream is ended.
    pub max_lag: usize,
    /// Every viewer reads for itself (the benchmark's naive design), with no shared feed.
    #[cfg(feature = "bench-naive")]
    pub naive: bool,
}

impl Hub {
    /// Starts the reader tasks and the status monitor; they stop when `shutdown` is cancelled.
    pub async fn start(
        store: Arc<dyn LogStore>,
        settings: HubSettings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..settings.readers.max(1) {
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
            metrics,
            max_lag: settings.max_lag,
            #[cfg(feature = "bench-naive")]
            naive: settings.naive,
        });
        for rx in receivers {
            let live = store.live_reader().await?;
            tokio::spawn(
                ReaderTask::new(
                    store.clone(),
                    live,
                    rx,
                    shutdown.clone(),
                    inner.metrics.live_read_failures.clone(),
                )
                .run(),
            );
        }
        tokio::spawn(monitor(
            Arc::downgrade(&inner),
            checks_rx,
            settings.status_poll,
            shutdown,
        ));
        Ok(Self { inner })
    }

    /// Subscribes `owner`'s viewer to the job's feed, creating it if needed. `from` is an id the
    /// caller has already read the store up to (the stream's last id, as the caller saw it
    /// before subscribing): a new feed reads from there, so nothing between is lost.
    pub fn subscribe(&self, job: &JobId, owner: &str, from: StreamId) -> Subscription {
        #[cfg(feature = "bench-naive")]
        if self.inner.naive {
            return Subscription::naive(super::naive::NaiveSubscription::new(
                self.inner.store.clone(),
                job.clone(),
            ));
        }
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let existing = feeds.get(job).cloned();
        // A feed authorised for another owner: the job changed hands since. Its viewers'
        // streams end (once the registry's lock is released: a revoke wakes every one of
        // them); this viewer gets a feed of its own.
        let mut stale = None;
        let feed = match existing {
            Some(feed) if feed.owner == owner => feed,
            other => {
                stale = other;
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                job.hash(&mut hasher);
                let reader = (hasher.finish() % self.inner.readers.len() as u64) as usize;
                let feed = Arc::new(Feed {
                    job: job.clone(),
                    owner: owner.to_owned(),
                    reader,
                    chan: Arc::new(Channel::new(
                        FEED_CAPACITY,
                        self.inner.metrics.lines_delivered.clone(),
                    )),
                    done: Mutex::new(None),
                    head: watch::Sender::new(0),
                    revoked: CancellationToken::new(),
                });
                feeds.insert(job.clone(), feed.clone());
                self.inner.metrics.live_jobs.set(feeds.len() as i64);
                let _ = self.inner.readers[reader].send(Command::Watch {
                    feed: feed.clone(),
                    from,
                });
                // The job may have turned terminal before the feed existed to hear about it.
                let _ = self.inner.checks.send(job.clone());
                feed
            }
        };
        let mark = Arc::new(AtomicU64::new(*feed.head.borrow()));
        let rx = feed.chan.subscribe(mark.clone());
        drop(feeds);
        if let Some(stale) = stale {
            stale.revoke();
            self.inner.stop_reading(&stale);
        }
        Subscription::feed(FeedSubscription::new(feed, rx, mark, self.inner.clone()))
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
        if feed.chan.receivers() == 0 && feeds.get(&feed.job).is_some_and(|f| Arc::ptr_eq(f, feed))
        {
            feeds.remove(&feed.job);
            self.metrics.live_jobs.set(feeds.len() as i64);
            drop(feeds);
            self.stop_reading(feed);
        }
    }

    fn stop_reading(&self, feed: &Arc<Feed>) {
        let _ = self.readers[feed.reader].send(Command::Unwatch(feed.clone()));
    }

    /// Feeds still following a job (not finished), for the status checks.
    pub(super) fn active_feeds(&self) -> Vec<Arc<Feed>> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .values()
            .filter(|f| f.done().is_none())
            .cloned()
            .collect()
    }

    pub(super) fn active_feed(&self, job: &JobId) -> Option<Arc<Feed>> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.get(job).filter(|f| f.done().is_none()).cloned()
    }

    /// Checks the records of `feeds`' jobs: a terminal status goes to the job's reader (which
    /// drains the rest and marks the feed done); a vanished record or another owner revokes
    /// the feed, ending its streams.
    pub(super) async fn check(&self, feeds: Vec<Arc<Feed>>) {
        if feeds.is_empty() {
            return;
        }
        let ids: Vec<JobId> = feeds.iter().map(|f| f.job.clone()).collect();
        match self.store.jobs(&ids).await {
            Ok(records) => {
                for (feed, record) in feeds.into_iter().zip(records) {
                    match record {
                        Some(Job { user_id, .. }) if user_id != feed.owner => self.revoke(&feed),
                        None => self.revoke(&feed),
                        Some(Job { status, .. }) if status.is_terminal() => {
                            let _ = self.readers[feed.reader]
                                .send(Command::Terminal(feed.job.clone(), status));
                        }
                        Some(_) => {}
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "status check failed"),
        }
    }

    fn revoke(&self, feed: &Arc<Feed>) {
        tracing::info!(job = %feed.job, "job record vanished or changed owner; ending its streams");
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds.get(&feed.job).is_some_and(|f| Arc::ptr_eq(f, feed)) {
            feeds.remove(&feed.job);
            self.metrics.live_jobs.set(feeds.len() as i64);
        }
        drop(feeds);
        feed.revoke();
        self.stop_reading(feed);
    }
}

/// A viewer's hold on a feed; dropping it lets the feed stop when it was the last.
pub(super) struct FeedSubscription {
    feed: Arc<Feed>,
    /// `None` only while dropping.
    rx: Option<Receiver>,
    hub: Arc<HubInner>,
    /// The feed's `head` when this viewer last took lines from it.
    mark: Arc<AtomicU64>,
    /// The feed was already done when subscribed: say so first.
    done_at_start: Option<Done>,
}

impl FeedSubscription {
    fn new(feed: Arc<Feed>, rx: Receiver, mark: Arc<AtomicU64>, hub: Arc<HubInner>) -> Self {
        let done_at_start = feed.done();
        Self {
            feed,
            rx: Some(rx),
            hub,
            mark,
            done_at_start,
        }
    }

    /// What comes next for a viewer whose last line is `pos` (see [`Next`]).
    pub(super) async fn next(&mut self, pos: StreamId) -> Next {
        if let Some(done) = self.done_at_start.take() {
            return Next::Done(done);
        }
        let rx = self.rx.as_ref().expect("taken only on drop");
        loop {
            match std::future::poll_fn(|cx| rx.poll_recv(cx)).await {
                Ok(FeedMsg::Lines { after, lines, head }) => {
                    self.mark.store(head, Ordering::Relaxed);
                    // Lines the feed wrote to the viewer's outlet itself are delivered too.
                    let pos = rx.written().map_or(pos, |written| written.max(pos));
                    if after > pos {
                        // Lines between the viewer's position and this batch came before it
                        // subscribed (or while it caught up): they are in the store.
                        return Next::Gap { budget: None };
                    }
                    let skip = lines.partition_point(|line| line.id <= pos);
                    if skip < lines.len() {
                        return Next::Lines(Batch { lines, skip });
                    }
                }
                Ok(FeedMsg::Done(done)) => return Next::Done(done),
                Ok(FeedMsg::Revoked) => return Next::Revoked,
                Err(Lagged) => {
                    return Next::Gap {
                        budget: Some(self.hub.max_lag),
                    };
                }
            }
        }
    }

    /// Lets the feed write lines after `pos` to `outlet` itself while the viewer waits.
    pub(super) fn arm(&self, outlet: &Arc<dyn Outlet>, pos: StreamId, expires_at: Instant) {
        if let Some(rx) = &self.rx {
            rx.arm(outlet, pos, expires_at);
        }
    }

    /// Takes the outlet back: the last line the feed wrote to it since, and when.
    pub(super) fn disarm(&self) -> Option<(StreamId, Instant)> {
        self.rx.as_ref().and_then(Receiver::disarm)
    }

    /// The viewer has read the store up to the live end after a [`Next::Gap`].
    pub(super) fn caught_up(&self) {
        self.mark.store(*self.feed.head.borrow(), Ordering::Relaxed);
    }

    /// How far behind the feed this viewer is, for the connection writing its stream.
    pub(super) fn lag_watch(&self) -> LagWatch {
        LagWatch {
            head: self.feed.head.subscribe(),
            revoked: self.feed.revoked.clone(),
            mark: self.mark.clone(),
            limit: self.hub.max_lag as u64,
            cut: self.hub.metrics.slow_viewers_cut.clone(),
        }
    }
}

impl Drop for FeedSubscription {
    fn drop(&mut self) {
        // Unsubscribe first so the count below no longer includes ours.
        drop(self.rx.take());
        self.hub.release(&self.feed);
    }
}
