//! Reader tasks: each runs one blocking multi-stream read over every job assigned to it and
//! publishes each batch to the job's feed; a finished job's remaining lines are drained before
//! its feed is marked done.

use std::{collections::HashMap, sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Done, Line, hub::Feed};
use crate::{
    ids::{JobId, StreamId},
    store::{JobStatus, LiveReader, LogEntry, LogStore, StoreError},
};

/// Most entries one read returns per stream.
const READ_COUNT: usize = 200;
/// How long one blocking read waits. Membership changes interrupt it, so this only bounds how
/// long a dead connection can go unnoticed.
const READ_BLOCK: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the hub and the monitor tell a reader.
pub(super) enum Command {
    Watch {
        feed: Arc<Feed>,
        from: StreamId,
    },
    /// Stop following this feed (its last viewer left, or it was revoked).
    Unwatch(Arc<Feed>),
    Terminal(JobId, JobStatus),
}

struct Watched {
    feed: Arc<Feed>,
    cursor: StreamId,
    terminal: Option<JobStatus>,
}

pub(super) struct ReaderTask {
    store: Arc<dyn LogStore>,
    live: Arc<dyn LiveReader>,
    commands: mpsc::UnboundedReceiver<Command>,
    jobs: HashMap<JobId, Watched>,
    shutdown: CancellationToken,
    /// `buildlogs_live_read_failures_total`.
    failures: Counter,
}

impl ReaderTask {
    pub(super) fn new(
        store: Arc<dyn LogStore>,
        live: Arc<dyn LiveReader>,
        commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
        failures: Counter,
    ) -> Self {
        Self {
            store,
            live,
            commands,
            jobs: HashMap::new(),
            shutdown,
            failures,
        }
    }

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
            Command::Unwatch(feed) => {
                // A feed created since for the same job is a different feed: keep that one.
                if self
                    .jobs
                    .get(&feed.job)
                    .is_some_and(|w| Arc::ptr_eq(&w.feed, &feed))
                {
                    self.jobs.remove(&feed.job);
                }
            }
            Command::Terminal(job, status) => {
                if let Some(w) = self.jobs.get_mut(&job) {
                    w.terminal = Some(status);
                }
            }
        }
    }

    async fn publish(watched: &mut Watched, entries: Vec<LogEntry>) {
        let Some(last) = entries.last().map(|e| e.id) else {
            return;
        };
        let after = watched.cursor;
        watched.cursor = last;
        watched
            .feed
            .publish(after, entries.into_iter().map(Line::render).collect())
            .await;
    }

    /// Sends what is left of terminal jobs, then marks their feeds done.
    async fn finish_terminal(&mut self) -> Result<(), StoreError> {
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
                Self::publish(watched, entries).await;
                if !more {
                    break;
                }
            }
            watched.feed.finish(Done {
                status: watched.terminal.clone().expect("filtered above"),
                last: watched.cursor,
            });
            self.jobs.remove(&job);
        }
        Ok(())
    }

    pub(super) async fn run(mut self) {
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
                            Self::publish(watched, entries).await;
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "live read failed; retrying");
                    self.failures.inc();
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
