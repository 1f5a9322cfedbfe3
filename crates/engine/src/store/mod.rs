//! The store: where job records and log streams live, behind one trait with two backends.
//!
//! [`redis::RedisStore`] reads and writes the keys the job runner owns (contract §1); it runs short
//! commands on a pool and blocking reads on dedicated connections. [`memory::MemoryStore`] is the
//! embedded single-instance default with the same semantics (ids, exclusive cursors, trimming,
//! wake-on-append). Everything above this module is backend-agnostic.

pub mod cluster;
mod commands;
pub mod memory;
pub mod redis;
pub mod resp;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::ids::{JobId, StreamId};

/// The runner refreshes this expiry on a log stream at every write (the embedded store keeps
/// a stream as long).
pub const RUNNER_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Status values the runner writes; `ready` and `failed` are terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus(pub String);

impl JobStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self.0.as_str(), "ready" | "failed")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What buildlogs needs of a job record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub user_id: String,
    pub status: JobStatus,
}

/// One log line. Missing fields are empty strings, never an error.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LogEntry {
    pub id: StreamId,
    pub ts: String,
    pub source: String,
    pub text: String,
    pub phase: String,
}

impl LogEntry {
    /// Builds an entry from a stream entry's field/value pairs, ignoring unknown fields.
    pub fn from_fields<'a>(
        id: StreamId,
        fields: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Self {
        let mut entry = Self {
            id,
            ..Self::default()
        };
        for (name, value) in fields {
            match name {
                "ts" => entry.ts = value,
                "source" => entry.source = value,
                "text" => entry.text = value,
                "phase" => entry.phase = value,
                _ => {}
            }
        }
        entry
    }

    /// Rough heap footprint, for bounding buffers.
    pub fn heap_size(&self) -> usize {
        self.ts.len() + self.source.len() + self.text.len() + self.phase.len()
    }
}

/// A stream entry as the store holds it, borrowed from its reply: the id and the four fields'
/// bytes (empty when missing; not necessarily UTF-8). Readers turn these straight into their
/// output (a page's JSON, a download's text, a search's matches) with no entry of their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub id: StreamId,
    pub ts: &'a [u8],
    pub source: &'a [u8],
    pub text: &'a [u8],
    pub phase: &'a [u8],
}

impl EntryRef<'_> {
    /// The bytes of its four fields.
    pub fn size(&self) -> usize {
        self.ts.len() + self.source.len() + self.text.len() + self.phase.len()
    }

    /// Sets the field `name` (one of the four; others are ignored).
    pub(crate) fn set<'v>(entry: &mut EntryRef<'v>, name: &[u8], value: &'v [u8]) {
        match name {
            b"ts" => entry.ts = value,
            b"source" => entry.source = value,
            b"text" => entry.text = value,
            b"phase" => entry.phase = value,
            _ => {}
        }
    }
}

impl<'a> From<&'a LogEntry> for EntryRef<'a> {
    fn from(e: &'a LogEntry) -> Self {
        Self {
            id: e.id,
            ts: e.ts.as_bytes(),
            source: e.source.as_bytes(),
            text: e.text.as_bytes(),
            phase: e.phase.as_bytes(),
        }
    }
}

/// Which entries a scan reads, and in which order. Both bounds are exclusive, as cursors are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Strictly older than the id (from the newest when `None`), newest first.
    Before(Option<StreamId>),
    /// Strictly newer than `after`, and not newer than `until` when it is set, oldest first.
    After {
        after: StreamId,
        until: Option<StreamId>,
    },
}

impl Span {
    /// The Redis command that reads it (`XREVRANGE` or `XRANGE`), as metrics and logs name it.
    pub fn command(self) -> &'static str {
        match self {
            Self::Before(_) => "XREVRANGE",
            Self::After { .. } => "XRANGE",
        }
    }

    /// Whether no entry can be in it (nothing is older than `0-0`, nothing newer than the max).
    pub fn is_empty(self) -> bool {
        match self {
            Self::Before(Some(before)) => before == StreamId::ZERO,
            Self::Before(None) => false,
            Self::After { after, until } => {
                after == StreamId::MAX || until.is_some_and(|until| until <= after)
            }
        }
    }
}

/// What a scan's sink is handed, entry by entry, in the scan's order.
pub type Sink<'s> = Box<dyn FnMut(EntryRef<'_>) + Send + 's>;

/// One range read of a [`LogStore::read`]: up to `count` entries of `span`, handed to `sink`.
pub struct Scan<'s> {
    pub span: Span,
    pub count: usize,
    pub sink: Sink<'s>,
}

/// What one [`Scan`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Entries handed to the sink: fewer than asked means the span has no more.
    pub entries: usize,
    /// The largest entry's [`EntryRef::size`], for sizing the next read.
    pub largest: usize,
}

impl Scanned {
    pub(crate) fn count(&mut self, entry: &EntryRef<'_>) {
        self.entries += 1;
        self.largest = self.largest.max(entry.size());
    }
}

/// A job record as the runner wrote it: `None` when there is none (both fields missing), or
/// when its `user_id` is not UTF-8, since such a record owns nothing (contract §1). A `status`
/// that is not UTF-8 is kept lossily, so it is never terminal.
pub fn job_from_fields(user_id: Option<&[u8]>, status: Option<&[u8]>) -> Option<Job> {
    if user_id.is_none() && status.is_none() {
        return None;
    }
    let user_id = std::str::from_utf8(user_id.unwrap_or_default()).ok()?;
    Some(Job {
        user_id: user_id.to_owned(),
        status: JobStatus(String::from_utf8_lossy(status.unwrap_or_default()).into_owned()),
    })
}

/// What `XINFO STREAM` says about a log stream; the input of the `reset` rule (contract §3).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StreamInfo {
    pub length: u64,
    pub first_id: Option<StreamId>,
    /// The newest retained entry (`last-entry`), if any.
    pub last_id: Option<StreamId>,
    pub last_generated_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something we cannot use.
    #[error("store error: {0}")]
    Other(String),
    /// The store is not one buildlogs can work with (too old a Redis).
    #[error("{0}")]
    Incompatible(String),
    /// A key holds another type than the command reads (`WRONGTYPE`): an answer about the
    /// data that each caller reads as the contract says (no such job, no stream).
    #[error("a key holds another type")]
    WrongType,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Field/value pairs of a stream entry or hash, in the order they are written.
pub type Fields<'a> = &'a [(&'a str, &'a str)];

/// Reads and writes of job records and log streams.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Short name for logs and metrics (`redis`, `memory`).
    fn backend(&self) -> &'static str;

    /// Whether the store answers at all (`/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Checks at start that the store can do what the service needs: `Incompatible` refuses
    /// to start, `Unavailable` does not (the service starts and connects when it can).
    async fn preflight(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The job record, or `None` when there is no such job (a key of another type included).
    async fn job(&self, job: &JobId) -> StoreResult<Option<Job>>;

    /// The record of each job, in order; `None` where there is no such job.
    async fn jobs(&self, jobs: &[JobId]) -> StoreResult<Vec<Option<Job>>>;

    /// Stream metadata, or `None` when the stream key does not exist.
    async fn stream_info(&self, job: &JobId) -> StoreResult<Option<StreamInfo>>;

    /// Up to `count` entries of `span`, in its order (newest first for `Before`, oldest first
    /// for `After`); nothing when the span is empty or the stream does not exist. A logs key of
    /// another type than a stream reads as no stream, with a warning.
    async fn range(&self, job: &JobId, span: Span, count: usize) -> StoreResult<Vec<LogEntry>>;

    /// Up to `count` entries strictly older than `before` (all when `None`), newest first.
    async fn range_before(
        &self,
        job: &JobId,
        before: Option<StreamId>,
        count: usize,
    ) -> StoreResult<Vec<LogEntry>> {
        self.range(job, Span::Before(before), count).await
    }

    /// Up to `count` entries strictly newer than `after`, oldest first.
    async fn range_after(
        &self,
        job: &JobId,
        after: StreamId,
        count: usize,
    ) -> StoreResult<Vec<LogEntry>> {
        self.range(job, Span::After { after, until: None }, count)
            .await
    }

    /// Runs `scans` in order, reading the job record first when `with_job` (`None` when not
    /// asked for, or when there is no such job), in one round trip where the backend can. The
    /// sinks see their entries whatever the record says: a caller that finds the job is not
    /// the requester's drops what they made. A logs key of another type than a stream reads
    /// as no stream (nothing), with a warning.
    async fn read(
        &self,
        job: &JobId,
        with_job: bool,
        scans: &mut [Scan<'_>],
    ) -> StoreResult<(Option<Job>, Vec<Scanned>)>;

    /// Appends an entry, trimming the stream to about `maxlen` entries and refreshing its expiry.
    async fn append(
        &self,
        job: &JobId,
        fields: Fields<'_>,
        maxlen: usize,
        ttl: Duration,
    ) -> StoreResult<StreamId>;

    /// Sets fields of the job record.
    async fn put_job(&self, job: &JobId, fields: Fields<'_>) -> StoreResult<()>;

    /// Publishes a status event on the job's events channel.
    async fn publish_event(&self, job: &JobId, payload: &str) -> StoreResult<()>;

    /// A live reader: blocking reads of many streams at once, on a connection of its own.
    async fn live_reader(&self) -> StoreResult<Arc<dyn LiveReader>>;

    /// Job ids whose status may have changed (a lossy hint; the record is the truth). The stream
    /// ends when the underlying subscription is lost.
    async fn status_hints(&self) -> StoreResult<BoxStream<'static, JobId>>;
}

/// The Redis behind `url`: a cluster when the URL says so (`redis+cluster://…`) or `cluster`
/// is set (`REDIS_CLUSTER`), else one Redis.
pub fn open_redis(
    url: &str,
    cluster: bool,
    pool_size: usize,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Arc<dyn LogStore>> {
    if cluster || cluster::ClusterUrl::is_cluster(url) {
        let url = cluster::ClusterUrl::parse(url).map_err(anyhow::Error::msg)?;
        return Ok(Arc::new(cluster::ClusterStore::new(url, metrics)?));
    }
    Ok(Arc::new(redis::RedisStore::new(url, pool_size, metrics)?))
}

/// The job, if it exists and `user` owns it.
pub async fn job_owned_by(
    store: &dyn LogStore,
    job: &JobId,
    user: &str,
) -> StoreResult<Option<Job>> {
    Ok(store
        .job(job)
        .await?
        .filter(|record| record.user_id == user))
}

/// A blocking multi-stream reader (one `XREAD BLOCK` watching many streams).
#[async_trait]
pub trait LiveReader: Send + Sync + 'static {
    /// Waits up to `block` for entries after each cursor, returning per-job batches (oldest
    /// first). Returns early, possibly empty, when interrupted.
    async fn read(
        &self,
        cursors: &[(JobId, StreamId)],
        count: usize,
        block: Duration,
    ) -> StoreResult<Vec<(JobId, Vec<LogEntry>)>>;

    /// Wakes a blocked `read`. Returns whether a blocked read was woken.
    async fn interrupt(&self) -> bool;
}
