//! The embedded backend: job records and log streams in process memory, for one instance.
//!
//! It mirrors the Redis semantics the service relies on: `<ms>-<seq>` ids that only grow,
//! exclusive ranges, `MAXLEN` trimming with `XINFO`-style bookkeeping (`entries-added`,
//! `first-entry`), key expiry, and blocking reads that wake the moment a line is appended.
//!
//! And Redis's retention: a stream expires a TTL (the runner's 24 h) after its last write, and
//! a job record goes once its stream is gone and the record itself was not written for the
//! retention period. A periodic sweep drops both, so a `--dev` left running for a week holds
//! about one day of demo jobs. Expiry runs on tokio's clock, so tests can fast-forward it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use futures_util::{StreamExt, stream::BoxStream};
use tokio::{
    sync::{Notify, broadcast, watch},
    time::Instant,
};

use super::{
    EntryRef, Fields, Job, JobStatus, LiveReader, LogEntry, LogStore, RUNNER_TTL, Scan, Scanned,
    Span, StoreResult, StreamInfo,
};
use crate::ids::{JobId, StreamId};

/// How often the sweep drops expired streams and forgotten job records.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct MemStream {
    entries: VecDeque<LogEntry>,
    last_generated: StreamId,
    entries_added: u64,
    max_deleted: StreamId,
    expires_at: Option<Instant>,
}

/// A job record and when it was last written.
struct Record {
    fields: HashMap<String, String>,
    written: Instant,
}

struct State {
    jobs: HashMap<JobId, Record>,
    streams: HashMap<JobId, MemStream>,
    /// A record whose stream is gone goes once it was not written for this long.
    retention: Duration,
}

impl State {
    /// Drops expired streams, and the records of jobs with no stream left that were not
    /// written for the retention period.
    fn sweep(&mut self, now: Instant) {
        self.streams
            .retain(|_, s| s.expires_at.is_none_or(|at| at > now));
        let (streams, retention) = (&self.streams, self.retention);
        self.jobs
            .retain(|job, record| streams.contains_key(job) || record.written + retention > now);
    }

    fn job(&self, job: &JobId) -> Option<Job> {
        self.jobs.get(job).map(|Record { fields: record, .. }| Job {
            user_id: record.get("user_id").cloned().unwrap_or_default(),
            status: JobStatus(record.get("status").cloned().unwrap_or_default()),
        })
    }

    /// The stream, unless missing or expired (an expired one is dropped, as Redis would).
    fn stream(&mut self, job: &JobId) -> Option<&MemStream> {
        let expired = self
            .streams
            .get(job)
            .is_some_and(|s| s.expires_at.is_some_and(|at| at <= Instant::now()));
        if expired {
            self.streams.remove(job);
        }
        self.streams.get(job)
    }
}

/// The in-process store. Cheap to clone; clones share data.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Bumped on every append: blocked readers wait for it to move.
    appended: watch::Sender<u64>,
    events: broadcast::Sender<JobId>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store keeping records as long as Redis keeps the runner's keys (24 h). Within a tokio
    /// runtime it sweeps itself periodically until it is dropped.
    pub fn new() -> Self {
        Self::with_retention(RUNNER_TTL, SWEEP_EVERY)
    }

    /// A store whose job records outlive their stream by `retention`, swept every `every`.
    pub fn with_retention(retention: Duration, every: Duration) -> Self {
        let store = Self {
            state: Arc::new(Mutex::new(State {
                jobs: HashMap::new(),
                streams: HashMap::new(),
                retention,
            })),
            appended: watch::Sender::new(0),
            events: broadcast::Sender::new(1024),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let state = Arc::downgrade(&store.state);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(state) = state.upgrade() else { return };
                    state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .sweep(Instant::now());
                }
            });
        }
        store
    }

    /// Job records and streams held (expired ones included until swept).
    pub fn held(&self) -> (usize, usize) {
        let state = self.lock();
        (state.jobs.len(), state.streams.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than losing the whole store would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deletes the entry `id` (as `XDEL` does, recording `max-deleted-entry-id`). For tests.
    pub fn delete_entry(&self, job: &JobId, id: StreamId) -> bool {
        let mut state = self.lock();
        let Some(stream) = state.streams.get_mut(job) else {
            return false;
        };
        let before = stream.entries.len();
        stream.entries.retain(|e| e.id != id);
        let deleted = stream.entries.len() != before;
        if deleted && id > stream.max_deleted {
            stream.max_deleted = id;
        }
        deleted
    }

    /// Removes the stream key (as expiry would). For tests.
    pub fn remove_stream(&self, job: &JobId) {
        self.lock().streams.remove(job);
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

#[async_trait]
impl LogStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn job(&self, job: &JobId) -> StoreResult<Option<Job>> {
        Ok(self.lock().job(job))
    }

    async fn jobs(&self, jobs: &[JobId]) -> StoreResult<Vec<Option<Job>>> {
        let state = self.lock();
        Ok(jobs.iter().map(|job| state.job(job)).collect())
    }

    async fn stream_info(&self, job: &JobId) -> StoreResult<Option<StreamInfo>> {
        let mut state = self.lock();
        Ok(state.stream(job).map(|s| StreamInfo {
            length: s.entries.len() as u64,
            first_id: s.entries.front().map(|e| e.id),
            last_id: s.entries.back().map(|e| e.id),
            last_generated_id: s.last_generated,
            max_deleted_id: s.max_deleted,
            entries_added: s.entries_added,
        }))
    }

    async fn range(&self, job: &JobId, span: Span, count: usize) -> StoreResult<Vec<LogEntry>> {
        let mut state = self.lock();
        let Some(stream) = state.stream(job) else {
            return Ok(Vec::new());
        };
        let entries = &stream.entries;
        Ok(match span {
            Span::Before(before) => {
                let end = match before {
                    Some(before) => entries.partition_point(|e| e.id < before),
                    None => entries.len(),
                };
                entries.range(..end).rev().take(count).cloned().collect()
            }
            Span::After { after, until } => {
                let start = entries.partition_point(|e| e.id <= after);
                let end = match until {
                    Some(until) => entries.partition_point(|e| e.id <= until).max(start),
                    None => entries.len(),
                };
                entries.range(start..end).take(count).cloned().collect()
            }
        })
    }

    async fn read(
        &self,
        job: &JobId,
        with_job: bool,
        scans: &mut [Scan<'_>],
    ) -> StoreResult<(Option<Job>, Vec<Scanned>)> {
        let mut state = self.lock();
        let record = if with_job { state.job(job) } else { None };
        let Some(stream) = state.stream(job) else {
            return Ok((record, vec![Scanned::default(); scans.len()]));
        };
        let entries = &stream.entries;
        let scanned = scans
            .iter_mut()
            .map(|scan| {
                let mut scanned = Scanned::default();
                let mut hand = |entry: &LogEntry| {
                    let entry = EntryRef::from(entry);
                    scanned.count(&entry);
                    (scan.sink)(entry);
                };
                match scan.span {
                    Span::Before(before) => {
                        let end =
                            before.map_or(entries.len(), |b| entries.partition_point(|e| e.id < b));
                        entries
                            .range(..end)
                            .rev()
                            .take(scan.count)
                            .for_each(&mut hand);
                    }
                    Span::After { after, until } => {
                        let start = entries.partition_point(|e| e.id <= after);
                        let end =
                            until.map_or(entries.len(), |u| entries.partition_point(|e| e.id <= u));
                        if start < end {
                            entries
                                .range(start..end)
                                .take(scan.count)
                                .for_each(&mut hand);
                        }
                    }
                }
                scanned
            })
            .collect();
        Ok((record, scanned))
    }

    async fn append(
        &self,
        job: &JobId,
        fields: Fields<'_>,
        maxlen: usize,
        ttl: Duration,
    ) -> StoreResult<StreamId> {
        let id = {
            let mut state = self.lock();
            if state.stream(job).is_none() {
                state.streams.insert(job.clone(), MemStream::default());
            }
            let stream = state.streams.get_mut(job).expect("inserted above");
            let now = Self::now_ms();
            let last = stream.last_generated;
            let id = if now > last.ms {
                StreamId::new(now, 0)
            } else {
                StreamId::new(last.ms, last.seq + 1)
            };
            stream.last_generated = id;
            stream.entries_added += 1;
            stream.expires_at = Some(Instant::now() + ttl);
            stream.entries.push_back(LogEntry::from_fields(
                id,
                fields.iter().map(|(k, v)| (*k, (*v).to_owned())),
            ));
            while stream.entries.len() > maxlen {
                stream.entries.pop_front();
            }
            id
        };
        self.appended.send_modify(|n| *n += 1);
        Ok(id)
    }

    async fn put_job(&self, job: &JobId, fields: Fields<'_>) -> StoreResult<()> {
        let mut state = self.lock();
        let record = state.jobs.entry(job.clone()).or_insert_with(|| Record {
            fields: HashMap::new(),
            written: Instant::now(),
        });
        record.written = Instant::now();
        for (name, value) in fields {
            record
                .fields
                .insert((*name).to_owned(), (*value).to_owned());
        }
        Ok(())
    }

    async fn publish_event(&self, job: &JobId, _payload: &str) -> StoreResult<()> {
        // Like Pub/Sub: nobody listening means the event is gone.
        let _ = self.events.send(job.clone());
        Ok(())
    }

    async fn live_reader(&self) -> StoreResult<Arc<dyn LiveReader>> {
        Ok(Arc::new(MemoryLiveReader {
            store: self.clone(),
            interrupted: Notify::new(),
        }))
    }

    async fn status_hints(&self) -> StoreResult<BoxStream<'static, JobId>> {
        let rx = self.events.subscribe();
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(job) => return Some((job, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }
}

struct MemoryLiveReader {
    store: MemoryStore,
    interrupted: Notify,
}

#[async_trait]
impl LiveReader for MemoryLiveReader {
    async fn read(
        &self,
        cursors: &[(JobId, StreamId)],
        count: usize,
        block: Duration,
    ) -> StoreResult<Vec<(JobId, Vec<LogEntry>)>> {
        let mut appended = self.store.appended.subscribe();
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Mark the version seen before looking, so an append between the look and the wait
            // still wakes us.
            appended.borrow_and_update();
            let mut out = Vec::new();
            for (job, cursor) in cursors {
                let entries = self.store.range_after(job, *cursor, count).await?;
                if !entries.is_empty() {
                    out.push((job.clone(), entries));
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return Ok(Vec::new()) },
                () = self.interrupted.notified() => return Ok(Vec::new()),
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    async fn interrupt(&self) -> bool {
        // notify_one stores a permit when nobody waits, so an interrupt that races ahead of the
        // wait is not lost.
        self.interrupted.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner_format::{LogWriter, Source};

    /// Retention on a fast-forwarded clock: a stream goes 24 h after its last write, a record
    /// once its stream is gone and it was not written for 24 h.
    #[tokio::test(start_paused = true)]
    async fn streams_and_records_expire_as_redis_keeps_them() {
        let store = MemoryStore::with_retention(RUNNER_TTL, Duration::from_secs(60));
        let writer = LogWriter::new(Arc::new(store.clone()));
        let hour = Duration::from_secs(3600);
        let (a, b) = (JobId::parse("a").unwrap(), JobId::parse("b").unwrap());
        writer.create_job(&a, "user_a", "code").await.unwrap();
        writer
            .append(&a, Source::Stdout, "build", "one")
            .await
            .unwrap();
        writer.create_job(&b, "user_a", "queued").await.unwrap();
        // Lets the sweeper run at the clock's new time.
        let pass = |d| async move {
            tokio::time::advance(d).await;
            tokio::time::sleep(Duration::from_secs(61)).await;
        };

        pass(23 * hour).await;
        assert_eq!(store.held(), (2, 1), "nothing expires within 24 h");
        writer
            .append(&a, Source::Stdout, "build", "two")
            .await
            .unwrap();

        pass(2 * hour).await;
        assert_eq!(
            store.held(),
            (1, 1),
            "b's record went: no stream, 25 h unwritten"
        );
        assert!(store.job(&b).await.unwrap().is_none());
        assert_eq!(
            store
                .range_after(&a, StreamId::ZERO, 10)
                .await
                .unwrap()
                .len(),
            2
        );

        pass(24 * hour).await;
        assert_eq!(
            store.held(),
            (0, 0),
            "a's stream expired 24 h after its last line, then its record"
        );
        assert!(store.job(&a).await.unwrap().is_none());
    }
}
