//! The Redis backend: the runner's keys, read exactly as written.
//!
//! Short commands (job lookups, `XINFO`) go through the deadpool pool, whose connections time
//! out any reply. The reads that carry the most bytes (history, download, search: a record and
//! ranges in one pipeline) go through [`resp`]'s lean path, connections of its
//! own whose replies are read in place. Blocking `XREAD`s never do: each [`RedisLiveReader`] owns a
//! dedicated connection with no reply timeout of its own, so a dozen open streams cannot starve
//! the pool that serves history. Pub/Sub hints come on another dedicated connection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::{StreamExt, stream::BoxStream};
use redis::{AsyncConnectionConfig, Value, aio::MultiplexedConnection};
use tokio::sync::Mutex;

use super::{
    EntryRef, Fields, Job, LiveReader, LogEntry, LogStore, Scan, Scanned, Span, StoreError,
    StoreResult, StreamInfo, commands, job_from_fields, resp,
};
use crate::{
    ids::{JobId, StreamId},
    metrics::Metrics,
};

/// How long a short command may take, connection included, before the caller gets a 503.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra time a blocking read gets beyond its `BLOCK` before its connection is presumed dead.
const BLOCK_MARGIN: Duration = Duration::from_secs(3);

pub struct RedisStore {
    client: redis::Client,
    pool: Pool,
    /// The lean read path (history, download, search).
    raw: resp::RawPool,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// A range's entries; a logs key of another type reads as no stream.
    async fn range_reply(
        &self,
        what: &'static str,
        job: &JobId,
        cmd: &redis::Cmd,
    ) -> StoreResult<Vec<LogEntry>> {
        match self.run::<Value>(what, Request::Cmd(cmd)).await {
            Ok(value) => parse_entries(value),
            Err(StoreError::WrongType) => {
                not_a_stream(job);
                Ok(Vec::new())
            }
            Err(err) => Err(err),
        }
    }

    /// Builds the store. Connects lazily: the service starts even when Redis is down.
    pub fn new(url: &str, pool_size: usize, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts {
                wait: Some(COMMAND_TIMEOUT),
                create: Some(COMMAND_TIMEOUT),
                recycle: Some(COMMAND_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self {
            client,
            pool,
            raw: resp::RawPool::new(url, pool_size, COMMAND_TIMEOUT)?,
            metrics,
        })
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &redis::Cmd,
    ) -> StoreResult<T> {
        self.run(what, Request::Cmd(cmd)).await
    }

    async fn pipe<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> StoreResult<T> {
        self.run(what, Request::Pipe(pipe)).await
    }

    /// Runs a command or pipeline on a pooled connection, within [`COMMAND_TIMEOUT`] all told.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        request: Request<'_>,
    ) -> StoreResult<T> {
        let result = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            match request {
                Request::Cmd(cmd) => cmd.query_async::<T>(&mut conn).await,
                Request::Pipe(pipe) => pipe.query_async::<T>(&mut conn).await,
            }
            .map_err(map_err)
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("{what} timed out"))));
        self.observe(what, result)
    }

    fn observe<T>(&self, what: &'static str, result: StoreResult<T>) -> StoreResult<T> {
        result.map_err(|err| self.observe_err(what, err))
    }

    fn observe_err(&self, what: &'static str, err: StoreError) -> StoreError {
        if matches!(err, StoreError::WrongType) {
            // An answer about the data, for the caller to read (no stream, no such job).
            return err;
        }
        self.metrics.redis_errors.inc();
        tracing::warn!(command = what, error = %err, "redis command failed");
        err
    }
}

enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

pub(super) fn map_err(err: redis::RedisError) -> StoreError {
    if err.code() == Some("WRONGTYPE") {
        StoreError::WrongType
    } else if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Other(err.to_string())
    }
}

#[async_trait]
impl LogStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.query::<String>("PING", &redis::cmd("PING"))
            .await
            .map(drop)
    }

    async fn preflight(&self) -> StoreResult<()> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        let info: String = self.query("INFO", &cmd).await?;
        check_version(&info)
    }

    async fn job(&self, job: &JobId) -> StoreResult<Option<Job>> {
        Ok(self.jobs(std::slice::from_ref(job)).await?.pop().flatten())
    }

    async fn jobs(&self, jobs: &[JobId]) -> StoreResult<Vec<Option<Job>>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // Per-command results: a key of another type fails only its own lookup.
        pipe.ignore_errors();
        for job in jobs {
            pipe.add_command(commands::job_record(job));
        }
        let replies: Vec<redis::RedisResult<(Option<Vec<u8>>, Option<Vec<u8>>)>> =
            self.pipe("HMGET", &pipe).await?;
        replies
            .into_iter()
            .map(|reply| match reply {
                Ok((user_id, status)) => Ok(job_from_fields(user_id.as_deref(), status.as_deref())),
                Err(err) => match map_err(err) {
                    // A `job:{id}` key of another type is no such job.
                    StoreError::WrongType => Ok(None),
                    err => Err(self.observe_err("HMGET", err)),
                },
            })
            .collect()
    }

    async fn stream_info(&self, job: &JobId) -> StoreResult<Option<StreamInfo>> {
        let cmd = commands::stream_info(job);
        let result = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(value) => parse_stream_info(value).map(Some),
                // The one error that is an answer: the key does not exist.
                Err(e) if e.to_string().contains("no such key") => Ok(None),
                Err(e) => match map_err(e) {
                    StoreError::WrongType => {
                        not_a_stream(job);
                        Ok(None)
                    }
                    err => Err(err),
                },
            }
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("XINFO timed out".into())));
        self.observe("XINFO", result)
    }

    async fn range(&self, job: &JobId, span: Span, count: usize) -> StoreResult<Vec<LogEntry>> {
        match commands::range(job, span, count) {
            Some(cmd) => self.range_reply(span.command(), job, &cmd).await,
            None => Ok(Vec::new()),
        }
    }

    /// One pipeline: the record's `HMGET` (when asked) and every scan's range, each answered on
    /// its own, so a key of another type fails only its own command. Read on the lean path
    /// ([`resp`]).
    async fn read(
        &self,
        job: &JobId,
        with_job: bool,
        scans: &mut [Scan<'_>],
    ) -> StoreResult<(Option<Job>, Vec<Scanned>)> {
        let mut request = Vec::new();
        let mut commands = 0;
        if with_job {
            commands::job_record(job).write_packed_command(&mut request);
            commands += 1;
        }
        // Which reply each scan reads, if its span is not empty.
        let mut replies = Vec::with_capacity(scans.len());
        for scan in scans.iter() {
            replies.push(commands::range(job, scan.span, scan.count).map(|cmd| {
                cmd.write_packed_command(&mut request);
                commands += 1;
                commands - 1
            }));
        }
        let mut scanned = vec![Scanned::default(); scans.len()];
        if commands == 0 {
            return Ok((None, scanned));
        }
        let mut record = None;
        let mut each = |i: usize, reply: &[u8]| -> StoreResult<()> {
            if with_job && i == 0 {
                record = resp::job_record(reply)?;
                return Ok(());
            }
            let Some(at) = replies.iter().position(|r| *r == Some(i)) else {
                return Ok(());
            };
            scanned[at] = match resp::scan_range(reply, scans[at].sink.as_mut()) {
                Err(StoreError::WrongType) => {
                    not_a_stream(job);
                    Scanned::default()
                }
                other => other?,
            };
            Ok(())
        };
        let result = self.raw.run(&request, commands, &mut each).await;
        self.observe("XRANGE", result)?;
        Ok((record, scanned))
    }

    async fn append(
        &self,
        job: &JobId,
        fields: Fields<'_>,
        maxlen: usize,
        ttl: Duration,
    ) -> StoreResult<StreamId> {
        let mut pipe = redis::pipe();
        pipe.add_command(commands::xadd(job, fields, maxlen))
            .add_command(commands::expire(job, ttl))
            .ignore();
        let (id,): (String,) = self.pipe("XADD", &pipe).await?;
        commands::added_id(&id)
    }

    async fn put_job(&self, job: &JobId, fields: Fields<'_>) -> StoreResult<()> {
        self.query::<i64>("HSET", &commands::put_job(job, fields))
            .await
            .map(drop)
    }

    async fn publish_event(&self, job: &JobId, payload: &str) -> StoreResult<()> {
        self.query::<i64>("PUBLISH", &commands::publish(job, payload))
            .await
            .map(drop)
    }

    async fn live_reader(&self) -> StoreResult<Arc<dyn LiveReader>> {
        Ok(Arc::new(RedisLiveReader {
            client: self.client.clone(),
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
            conn: Mutex::new(None),
            blocked_client: AtomicI64::new(0),
        }))
    }

    async fn status_hints(&self) -> StoreResult<BoxStream<'static, JobId>> {
        let result = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut pubsub = self.client.get_async_pubsub().await.map_err(map_err)?;
            pubsub.psubscribe("job:*:events").await.map_err(map_err)?;
            Ok(pubsub)
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("PSUBSCRIBE timed out".into())));
        let pubsub = self.observe("PSUBSCRIBE", result)?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move { JobId::from_events_channel(msg.get_channel_name()) })
            .boxed())
    }
}

/// A dedicated connection for `XREAD BLOCK`, interruptible with `CLIENT UNBLOCK`.
pub struct RedisLiveReader {
    client: redis::Client,
    pool: Pool,
    metrics: Arc<Metrics>,
    /// The connection and its `CLIENT ID`; `None` until first use or after a failure.
    conn: Mutex<Option<(MultiplexedConnection, i64)>>,
    /// The client id while a read is in flight, 0 otherwise.
    blocked_client: AtomicI64,
}

impl RedisLiveReader {
    /// The cursors whose keys are streams or do not exist yet (one `TYPE` each, pipelined).
    async fn streams_only(
        &self,
        cursors: &[(JobId, StreamId)],
    ) -> StoreResult<Vec<(JobId, StreamId)>> {
        let mut pipe = redis::pipe();
        for (job, _) in cursors {
            pipe.cmd("TYPE").arg(job.logs_key());
        }
        let types = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            pipe.query_async::<Vec<String>>(&mut conn)
                .await
                .map_err(map_err)
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("TYPE timed out".into())))?;
        Ok(cursors
            .iter()
            .zip(types)
            .filter(|(_, kind)| matches!(kind.as_str(), "stream" | "none"))
            .map(|(cursor, _)| cursor.clone())
            .collect())
    }

    async fn connection(&self) -> StoreResult<(MultiplexedConnection, i64)> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // No reply timeout on this connection: its replies are as slow as `BLOCK` makes them.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(None);
        let connect = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(map_err)?;
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            let _: () = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg("buildlogs-live-reader")
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            Ok::<_, StoreError>((conn, id))
        };
        let conn = tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("connect timed out".into())))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

#[async_trait]
impl LiveReader for RedisLiveReader {
    async fn read(
        &self,
        cursors: &[(JobId, StreamId)],
        count: usize,
        block: Duration,
    ) -> StoreResult<Vec<(JobId, Vec<LogEntry>)>> {
        if cursors.is_empty() {
            return Ok(Vec::new());
        }
        let (mut conn, client_id) = match self.connection().await {
            Ok(conn) => conn,
            Err(err) => {
                self.metrics.redis_errors.inc();
                return Err(err);
            }
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for (job, _) in cursors {
            cmd.arg(job.logs_key());
        }
        for (_, cursor) in cursors {
            cmd.arg(cursor.to_string());
        }
        self.blocked_client.store(client_id, Ordering::SeqCst);
        let reply =
            tokio::time::timeout(block + BLOCK_MARGIN, cmd.query_async::<Value>(&mut conn)).await;
        self.blocked_client.store(0, Ordering::SeqCst);
        let value = match reply {
            Ok(Ok(value)) => value,
            // One of the keys is not a stream, which fails the whole `XREAD`: read the others
            // (contract §1: that one is a stream with nothing to send yet).
            Ok(Err(err)) if err.code() == Some("WRONGTYPE") => {
                let streams = self.streams_only(cursors).await?;
                if streams.len() == cursors.len() {
                    return Err(StoreError::Other("XREAD: WRONGTYPE on stream keys".into()));
                }
                if streams.is_empty() {
                    // Nothing to block on: the caller comes back after a short pause.
                    tokio::time::sleep(block.min(Duration::from_millis(100))).await;
                    return Ok(Vec::new());
                }
                return Box::pin(self.read(&streams, count, block)).await;
            }
            Ok(Err(err)) => {
                self.metrics.redis_errors.inc();
                *self.conn.lock().await = None;
                return Err(map_err(err));
            }
            Err(_) => {
                self.metrics.redis_errors.inc();
                *self.conn.lock().await = None;
                return Err(StoreError::Unavailable(
                    "blocking read did not return".into(),
                ));
            }
        };
        parse_xread(value)
    }

    async fn interrupt(&self) -> bool {
        let client_id = self.blocked_client.load(Ordering::SeqCst);
        if client_id == 0 {
            return false;
        }
        let unblock = async {
            let mut conn = self.pool.get().await.ok()?;
            redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(client_id)
                .query_async::<i64>(&mut conn)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(COMMAND_TIMEOUT, unblock).await,
            Ok(Some(1))
        )
    }
}

/// The oldest Redis whose `XINFO STREAM` has the trim bookkeeping `reset` needs
/// (`entries-added`, `max-deleted-entry-id`).
const MIN_VERSION: (u32, u32) = (7, 0);

/// Refuses a Redis older than [`MIN_VERSION`], from its `INFO server` text.
pub(super) fn check_version(info: &str) -> StoreResult<()> {
    let found = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or_else(|| StoreError::Other("INFO server has no redis_version".into()))?;
    let mut parts = found.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < MIN_VERSION {
        return Err(StoreError::Incompatible(format!(
            "REDIS_URL names Redis {found}, but buildlogs needs Redis {}.{} or newer: older \
             versions' XINFO STREAM lacks the trim bookkeeping (entries-added, \
             max-deleted-entry-id) that resuming a stream relies on",
            MIN_VERSION.0, MIN_VERSION.1
        )));
    }
    Ok(())
}

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn bad_reply(what: &str) -> StoreError {
    StoreError::Other(format!("unexpected reply shape for {what}"))
}

pub(super) fn parse_id(value: &Value) -> StoreResult<StreamId> {
    text(value)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_reply("stream id"))
}

/// Flat `[k, v, k, v]` arrays (RESP2) and maps (RESP3) alike.
fn pairs(value: Value) -> StoreResult<Vec<(Value, Value)>> {
    match value {
        Value::Map(map) => Ok(map),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        _ => Err(bad_reply("field list")),
    }
}

/// A bulk string as an owned `String`, without copying when it is valid UTF-8.
pub(super) fn into_text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn parse_entry(value: Value) -> StoreResult<LogEntry> {
    let Value::Array(parts) = value else {
        return Err(bad_reply("stream entry"));
    };
    let mut parts = parts.into_iter();
    let id = parse_id(&parts.next().ok_or_else(|| bad_reply("stream entry"))?)?;
    let mut entry = LogEntry {
        id,
        ..LogEntry::default()
    };
    let fields = match parts.next() {
        Some(Value::Nil) | None => return Ok(entry),
        Some(fields) => pairs(fields)?,
    };
    for (name, value) in fields {
        let slot = match &name {
            Value::BulkString(n) => match n.as_slice() {
                b"ts" => &mut entry.ts,
                b"source" => &mut entry.source,
                b"text" => &mut entry.text,
                b"phase" => &mut entry.phase,
                _ => continue,
            },
            _ => continue,
        };
        if let Some(text) = into_text(value) {
            *slot = text;
        }
    }
    Ok(entry)
}

pub(super) fn parse_entries(value: Value) -> StoreResult<Vec<LogEntry>> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        _ => Err(bad_reply("stream range")),
    }
}

pub(super) fn parse_xread(value: Value) -> StoreResult<Vec<(JobId, Vec<LogEntry>)>> {
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(map) => map,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop().unwrap_or(Value::Nil);
                    let key = kv.pop().unwrap_or(Value::Nil);
                    Ok((key, entries))
                }
                _ => Err(bad_reply("XREAD")),
            })
            .collect::<StoreResult<_>>()?,
        _ => return Err(bad_reply("XREAD")),
    };
    let mut out = Vec::with_capacity(streams.len());
    for (key, entries) in streams {
        let key = text(&key).ok_or_else(|| bad_reply("XREAD key"))?;
        let job = key
            .strip_suffix(":logs")
            .and_then(|k| k.strip_prefix("job:"))
            .and_then(|id| JobId::parse(id).ok())
            .ok_or_else(|| bad_reply("XREAD key"))?;
        out.push((job, parse_entries(entries)?));
    }
    Ok(out)
}

/// A logs key of another type than a stream is no stream (contract §1): worth a warning, since
/// someone wrote it, but never an error.
pub(super) fn not_a_stream(job: &JobId) {
    tracing::warn!(key = %job.logs_key(), "the logs key is not a stream; serving it as no stream");
}

/// An `HMGET user_id status` reply as a job record (see [`job_from_fields`]).
pub(super) fn record_reply(reply: redis::RedisResult<Value>) -> StoreResult<Option<Job>> {
    let value = match reply.map_err(map_err) {
        Ok(value) => value,
        Err(StoreError::WrongType) => return Ok(None),
        Err(err) => return Err(err),
    };
    let field = |v: &Value| match v {
        Value::BulkString(b) => Ok(Some(b.clone())),
        Value::SimpleString(s) => Ok(Some(s.clone().into_bytes())),
        Value::Nil => Ok(None),
        _ => Err(bad_reply("HMGET")),
    };
    match value {
        Value::Array(items) if items.len() == 2 => {
            let (user_id, status) = (field(&items[0])?, field(&items[1])?);
            Ok(job_from_fields(user_id.as_deref(), status.as_deref()))
        }
        _ => Err(bad_reply("HMGET")),
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Hands the entries of an `XRANGE`/`XREVRANGE` reply to `sink`, borrowing their bytes: flat
/// field lists (RESP2) and maps (RESP3) alike; an entry with no fields (nil) has empty ones.
pub(super) fn scan_reply(
    value: &Value,
    sink: &mut (dyn FnMut(EntryRef<'_>) + Send + '_),
) -> StoreResult<Scanned> {
    let mut scanned = Scanned::default();
    let items = match value {
        Value::Nil => return Ok(scanned),
        Value::Array(items) => items,
        _ => return Err(bad_reply("stream range")),
    };
    for item in items {
        let Value::Array(parts) = item else {
            return Err(bad_reply("stream entry"));
        };
        let id = match parts.first() {
            Some(Value::BulkString(id)) => StreamId::parse_bytes(id),
            Some(Value::SimpleString(id)) => StreamId::parse_bytes(id.as_bytes()),
            _ => return Err(bad_reply("stream entry")),
        }
        .map_err(|_| bad_reply("stream id"))?;
        let mut entry = EntryRef {
            id,
            ..EntryRef::default()
        };
        match parts.get(1) {
            None | Some(Value::Nil) => {}
            Some(Value::Array(fields)) => {
                for pair in fields.chunks_exact(2) {
                    if let (Some(name), Some(value)) = (bytes(&pair[0]), bytes(&pair[1])) {
                        EntryRef::set(&mut entry, name, value);
                    }
                }
            }
            Some(Value::Map(fields)) => {
                for (name, value) in fields {
                    if let (Some(name), Some(value)) = (bytes(name), bytes(value)) {
                        EntryRef::set(&mut entry, name, value);
                    }
                }
            }
            Some(_) => return Err(bad_reply("field list")),
        }
        scanned.count(&entry);
        sink(entry);
    }
    Ok(scanned)
}

pub(super) fn parse_stream_info(value: Value) -> StoreResult<StreamInfo> {
    let mut info = StreamInfo::default();
    for (key, value) in pairs(value)? {
        let Some(key) = text(&key) else { continue };
        match key.as_str() {
            "length" => info.length = int(&value)?,
            "entries-added" => info.entries_added = int(&value)?,
            "last-generated-id" => info.last_generated_id = parse_id(&value)?,
            "max-deleted-entry-id" => info.max_deleted_id = parse_id(&value)?,
            "first-entry" => info.first_id = entry_id(value)?,
            "last-entry" => info.last_id = entry_id(value)?,
            _ => {}
        }
    }
    Ok(info)
}

/// The id of an `XINFO STREAM` entry (`first-entry`, `last-entry`), nil for none.
fn entry_id(value: Value) -> StoreResult<Option<StreamId>> {
    match value {
        Value::Nil => Ok(None),
        entry => Ok(Some(parse_entry(entry)?.id)),
    }
}

fn int(value: &Value) -> StoreResult<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).map_err(|_| bad_reply("integer")),
        other => text(other)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_reply("integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_older_than_7_is_refused_with_both_versions_named() {
        for ok in ["7.0.0", "7.0.15", "7.2.4", "8.0.1", "10.1"] {
            assert!(
                check_version(&format!(
                    "# Server\r\nredis_version:{ok}\r\nredis_mode:standalone\r\n"
                ))
                .is_ok(),
                "{ok}"
            );
        }
        for old in ["6.2.14", "6.0.0", "5.0.7", "garbage"] {
            let err = check_version(&format!("redis_version:{old}\r\n")).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::Incompatible(_)), "{old}: {msg}");
            assert!(msg.contains(old) && msg.contains("7.0 or newer"), "{msg}");
        }
    }
}
