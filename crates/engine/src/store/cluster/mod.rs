//! The Redis Cluster backend (contract §8): the same keys, written by the same runner, spread
//! over the cluster's slots.
//!
//! - Short commands (job lookups, history ranges, `XINFO`) go through one multiplexed
//!   `ClusterConnection`, which routes by key and follows `MOVED`/`ASK`. Every call is bounded
//!   ([`COMMAND_TIMEOUT`]: a 503 within 5 s, never a hang), and after a timeout or an I/O error
//!   the connection is rebuilt from the seeds: redis-rs retries a timed-out command on the same
//!   node without refreshing its slot map, so a master that hangs (rather than dies) would
//!   otherwise never be left even after the cluster failed it over. No multi-key commands and no
//!   cross-slot pipelines: `job:{id}` and `job:{id}:logs` live in different slots.
//! - Live reads: [`tracking::TrackingLiveReader`], one connection per master woken by
//!   client-side-caching invalidations, since one blocking `XREAD` can only watch one slot.
//! - Status hints: classic Pub/Sub is cluster-wide, so one subscription on any node hears every
//!   job's events; when that node goes, the next subscription picks another.

pub mod tracking;

use std::{
    future::Future,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures_util::{StreamExt, future::join_all, stream::BoxStream};
use redis::{
    FromRedisValue, RedisResult, Value,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

use super::{
    Fields, Job, LiveReader, LogEntry, LogStore, Scan, Scanned, Span, StoreError, StoreResult,
    StreamInfo, commands,
    redis::{
        COMMAND_TIMEOUT, check_version, map_err, not_a_stream, parse_entries, parse_stream_info,
        record_reply, scan_reply,
    },
};
use crate::{
    ids::{JobId, StreamId},
    metrics::Metrics,
};

/// Where a cluster is, as `REDIS_URL` says it: `redis+cluster://[user:pass@]host:port,host:port/`
/// (or `redis://…` with `REDIS_CLUSTER=true`). Any reachable node is a seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterUrl {
    /// `redis://[user:pass@]host:port/`, one per seed.
    pub seeds: Vec<String>,
}

impl ClusterUrl {
    /// Whether `url` names a cluster by its scheme.
    pub fn is_cluster(url: &str) -> bool {
        url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
    }

    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis+cluster://")
            .or_else(|| url.strip_prefix("redis://"))
            .ok_or_else(|| {
                if url.starts_with("rediss") {
                    "TLS (rediss://) is not supported here: put a TLS proxy in front".to_owned()
                } else {
                    format!("a cluster URL is redis+cluster://host:port,host:port/, not {url:?}")
                }
            })?;
        let rest = rest.trim_end_matches('/');
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{auth}{h}/"))
            .collect();
        if seeds.is_empty() {
            return Err(format!("no seed node in {url:?}"));
        }
        for seed in &seeds {
            redis::Client::open(seed.as_str()).map_err(|e| format!("{seed}: {e}"))?;
        }
        Ok(Self { seeds })
    }
}

pub struct ClusterStore {
    url: ClusterUrl,
    short: Resilient,
    metrics: Arc<Metrics>,
    /// Which seed the next Pub/Sub subscription tries first.
    next_hint_seed: AtomicUsize,
}

impl ClusterStore {
    /// Builds the store. Connects lazily: the service starts even when the cluster is down.
    pub fn new(url: ClusterUrl, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = ClusterClientBuilder::new(url.seeds.clone())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .overall_response_timeout(Some(COMMAND_TIMEOUT))
            .build()?;
        Ok(Self {
            url,
            short: Resilient::new(client),
            metrics,
            next_hint_seed: AtomicUsize::new(0),
        })
    }

    async fn query<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &redis::Cmd,
    ) -> StoreResult<T> {
        let result = self
            .short
            .run(|mut conn| async move { cmd.query_async::<T>(&mut conn).await })
            .await;
        self.observe(what, result)
    }

    async fn route<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: redis::Cmd,
        routing: RoutingInfo,
    ) -> StoreResult<T> {
        let result = self
            .short
            .run(|mut conn| async move {
                let value = conn.route_command(cmd, routing).await?;
                T::from_redis_value(value).map_err(Into::into)
            })
            .await;
        self.observe(what, result)
    }

    /// A range read's reply; a logs key of another type reads as no stream (nil).
    async fn range_reply(
        &self,
        what: &'static str,
        job: &JobId,
        cmd: &redis::Cmd,
    ) -> StoreResult<Value> {
        match self.query::<Value>(what, cmd).await {
            Err(StoreError::WrongType) => {
                not_a_stream(job);
                Ok(Value::Nil)
            }
            other => other,
        }
    }

    fn observe<T>(&self, what: &'static str, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(err) = &result
            && !matches!(err, StoreError::WrongType)
        {
            self.metrics.redis_errors.inc();
            tracing::warn!(command = what, error = %err, "redis cluster command failed");
        }
        result
    }
}

#[async_trait]
impl LogStore for ClusterStore {
    fn backend(&self) -> &'static str {
        "redis-cluster"
    }

    /// Ready when a node answers and says the cluster is `ok` (every slot served).
    async fn ping(&self) -> StoreResult<()> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("INFO");
        let info: String = self.query("CLUSTER INFO", &cmd).await?;
        if info.lines().any(|l| l.trim() == "cluster_state:ok") {
            Ok(())
        } else {
            Err(StoreError::Unavailable("the cluster is not ok".into()))
        }
    }

    async fn preflight(&self) -> StoreResult<()> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let info: String = self.route("INFO", cmd, routing).await?;
        check_version(&info)
    }

    async fn job(&self, job: &JobId) -> StoreResult<Option<Job>> {
        let cmd = commands::job_record(job);
        let reply = self
            .short
            .run(|mut conn| async move { Ok(cmd.query_async::<Value>(&mut conn).await) })
            .await;
        self.observe("HMGET", reply.and_then(record_reply))
    }

    /// One command per job, concurrently: the records live in different slots.
    async fn jobs(&self, jobs: &[JobId]) -> StoreResult<Vec<Option<Job>>> {
        join_all(jobs.iter().map(|job| self.job(job)))
            .await
            .into_iter()
            .collect()
    }

    async fn stream_info(&self, job: &JobId) -> StoreResult<Option<StreamInfo>> {
        match self
            .query::<Value>("XINFO", &commands::stream_info(job))
            .await
        {
            Ok(value) => parse_stream_info(value).map(Some),
            // The one error that is an answer: the key does not exist.
            Err(StoreError::Other(detail)) if detail.contains("no such key") => Ok(None),
            Err(StoreError::WrongType) => {
                not_a_stream(job);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    async fn range(&self, job: &JobId, span: Span, count: usize) -> StoreResult<Vec<LogEntry>> {
        match commands::range(job, span, count) {
            Some(cmd) => self
                .range_reply(span.command(), job, &cmd)
                .await
                .and_then(parse_entries),
            None => Ok(Vec::new()),
        }
    }

    /// The record and the ranges concurrently: they live in different slots, so they cannot
    /// share a pipeline, but they share the wait.
    async fn read(
        &self,
        job: &JobId,
        with_job: bool,
        scans: &mut [Scan<'_>],
    ) -> StoreResult<(Option<Job>, Vec<Scanned>)> {
        let record = async {
            match with_job {
                true => self.job(job).await,
                false => Ok(None),
            }
        };
        let spans: Vec<_> = scans.iter().map(|scan| (scan.span, scan.count)).collect();
        let ranges = join_all(spans.into_iter().map(|(span, count)| async move {
            match commands::range(job, span, count) {
                Some(cmd) => self.range_reply("XRANGE", job, &cmd).await,
                None => Ok(Value::Nil),
            }
        }));
        let (record, replies) = futures_util::join!(record, ranges);
        let record = record?;
        let mut scanned = Vec::with_capacity(scans.len());
        for (scan, reply) in scans.iter_mut().zip(replies) {
            scanned.push(self.observe("XRANGE", scan_reply(&reply?, scan.sink.as_mut()))?);
        }
        Ok((record, scanned))
    }

    /// `XADD`, then `EXPIRE`, as single commands: redis-rs follows `MOVED`/`ASK` for those, not
    /// for the commands of a pipeline, and a slot may be moving.
    async fn append(
        &self,
        job: &JobId,
        fields: Fields<'_>,
        maxlen: usize,
        ttl: Duration,
    ) -> StoreResult<StreamId> {
        let id: String = self
            .query("XADD", &commands::xadd(job, fields, maxlen))
            .await?;
        self.query::<i64>("EXPIRE", &commands::expire(job, ttl))
            .await?;
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
        Ok(Arc::new(tracking::TrackingLiveReader::new(
            self.url.seeds.clone(),
            self.metrics.clone(),
        )))
    }

    /// `PSUBSCRIBE job:*:events` on one node, the seeds in turn: classic Pub/Sub reaches every
    /// node's subscribers.
    async fn status_hints(&self) -> StoreResult<BoxStream<'static, JobId>> {
        let seeds = &self.url.seeds;
        let first = self.next_hint_seed.fetch_add(1, Ordering::Relaxed);
        let mut last_err = StoreError::Unavailable("no seed".into());
        for i in 0..seeds.len() {
            let seed = &seeds[(first + i) % seeds.len()];
            let subscribe = async {
                let client = redis::Client::open(seed.as_str()).map_err(map_err)?;
                let mut pubsub = client.get_async_pubsub().await.map_err(map_err)?;
                pubsub.psubscribe("job:*:events").await.map_err(map_err)?;
                Ok::<_, StoreError>(pubsub)
            };
            match tokio::time::timeout(COMMAND_TIMEOUT, subscribe).await {
                Ok(Ok(pubsub)) => {
                    return Ok(pubsub
                        .into_on_message()
                        .filter_map(|msg| async move {
                            JobId::from_events_channel(msg.get_channel_name())
                        })
                        .boxed());
                }
                Ok(Err(err)) => last_err = err,
                Err(_) => last_err = StoreError::Unavailable("PSUBSCRIBE timed out".into()),
            }
        }
        self.observe("PSUBSCRIBE", Err(last_err))
    }
}

/// A `ClusterConnection` that is bounded and rebuilt (see the module docs).
struct Resilient {
    inner: Arc<ResilientInner>,
}

struct ResilientInner {
    client: ClusterClient,
    /// (generation, connection); `None` until first use and after a rebuild was asked for.
    conn: RwLock<(u64, Option<ClusterConnection>)>,
    /// One connect at a time.
    connecting: tokio::sync::Mutex<()>,
    /// When the connection was last dropped for a rebuild: at most once a second.
    dropped_at: std::sync::Mutex<Option<Instant>>,
}

impl Resilient {
    fn new(client: ClusterClient) -> Self {
        Self {
            inner: Arc::new(ResilientInner {
                client,
                conn: RwLock::new((0, None)),
                connecting: tokio::sync::Mutex::new(()),
                dropped_at: std::sync::Mutex::new(None),
            }),
        }
    }

    fn current(&self) -> (u64, Option<ClusterConnection>) {
        let guard = self.inner.conn.read().unwrap_or_else(|p| p.into_inner());
        (guard.0, guard.1.clone())
    }

    async fn connection(&self) -> StoreResult<(u64, ClusterConnection)> {
        if let (generation, Some(conn)) = self.current() {
            return Ok((generation, conn));
        }
        let _connecting = self.inner.connecting.lock().await;
        if let (generation, Some(conn)) = self.current() {
            return Ok((generation, conn));
        }
        let conn = self
            .inner
            .client
            .get_async_connection()
            .await
            .map_err(map_err)?;
        let mut guard = self.inner.conn.write().unwrap_or_else(|p| p.into_inner());
        guard.0 += 1;
        guard.1 = Some(conn.clone());
        Ok((guard.0, conn))
    }

    /// Runs `f` on the connection within [`COMMAND_TIMEOUT`], connecting included.
    async fn run<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let (generation, conn) = self.connection().await?;
            Ok::<_, StoreError>((generation, f(conn).await))
        })
        .await;
        match attempt {
            Ok(Ok((_, Ok(value)))) => Ok(value),
            Ok(Ok((generation, Err(err)))) => {
                if err.is_timeout() || err.is_io_error() || err.is_connection_dropped() {
                    self.rebuild(generation);
                }
                Err(map_err(err))
            }
            Ok(Err(err)) => Err(err),
            Err(_) => {
                self.rebuild(self.current().0);
                Err(StoreError::Unavailable(
                    "redis cluster command timed out".into(),
                ))
            }
        }
    }

    /// Drops the connection of `generation`, so the next call builds a fresh one from the seeds
    /// with a fresh slot map; unless that happened already, or less than a second ago.
    fn rebuild(&self, generation: u64) {
        let mut guard = self.inner.conn.write().unwrap_or_else(|p| p.into_inner());
        let mut dropped_at = self
            .inner
            .dropped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let recent = dropped_at.is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if guard.0 == generation && guard.1.is_some() && !recent {
            guard.1 = None;
            *dropped_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert!(ClusterUrl::is_cluster("redis+cluster://a:1/"));
        assert!(!ClusterUrl::is_cluster("redis://a:1/"));
        assert_eq!(
            ClusterUrl::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").unwrap(),
            ClusterUrl {
                seeds: vec![
                    "redis://127.0.0.1:7000/".into(),
                    "redis://127.0.0.1:7001/".into()
                ]
            }
        );
        assert_eq!(
            ClusterUrl::parse("redis://u:p@h1:1,h2:2").unwrap().seeds,
            vec![
                "redis://u:p@h1:1/".to_owned(),
                "redis://u:p@h2:2/".to_owned()
            ]
        );
        assert!(ClusterUrl::parse("rediss+cluster://h:1/").is_err());
        assert!(ClusterUrl::parse("redis+cluster:///").is_err());
        assert!(ClusterUrl::parse("http://h:1/").is_err());
    }
}
