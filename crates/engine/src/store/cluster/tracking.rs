//! The live reader of a cluster, woken by client-side-caching invalidations.
//!
//! One blocking `XREAD` can only watch streams of one slot, and the runner's keys spread over
//! all of them, so blocking reads would need a connection per followed slot. Instead, one RESP3
//! connection per master has `CLIENT TRACKING ON` (default mode, which needs no server
//! setting): every followed stream is read with a non-blocking `XREAD COUNT n STREAMS key
//! cursor` on the connection of its slot's master, which registers the key there, and the next
//! write to it (`XADD`, `EXPIRE`, `DEL`, expiry, `MIGRATE` away) sends one `invalidate` push on
//! that connection. Only invalidated keys are read again, which re-arms them. So reads follow
//! writes one for one whatever the number of viewers, and connections are one per master and
//! reader, whatever the number of jobs.
//!
//! Correctness rests on four rules:
//! - a key's dirty mark is cleared when its read is *sent*; an invalidation arriving later, even
//!   one racing the reply, marks it again, so no write goes unobserved;
//! - tracking lives on a connection: when one is lost (a `Disconnection` push, an I/O error, a
//!   timeout) every key of that node is dirty again and is read on a fresh connection;
//! - a slot can move without touching a followed key (a key that does not exist yet, a
//!   failover): the slot map is polled once a second and keys whose master changed are re-read;
//! - reads resume from per-key cursors (stream ids) and never go backwards, so nothing is lost
//!   or repeated across `MOVED`, `ASK`, reconnects and failovers.
//!
//! A writer that sends `EXPIRE` in a round trip of its own after `XADD` wakes a reader twice
//! per line; a key that shows that echo gets its reads deferred by a millisecond, so the
//! `EXPIRE` lands while it is untracked (`ECHO_DELAY`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{
    AsyncConnectionConfig, ErrorKind, PushInfo, PushKind, RedisError, ServerErrorKind, Value,
    aio::MultiplexedConnection,
};
use tokio::{
    sync::{Mutex, Notify, mpsc},
    time::Instant,
};

use super::super::{
    LiveReader, LogEntry, StoreResult,
    redis::{COMMAND_TIMEOUT, parse_entries},
};
use crate::{
    ids::{JobId, StreamId},
    metrics::Metrics,
};

/// Number of hash slots in a Redis Cluster.
const SLOTS: usize = 16384;
/// How often the slot map is checked (and a node connection exercised).
const TOPOLOGY_POLL: Duration = Duration::from_secs(1);
/// The deferral of a key whose writer echoes (see the module docs).
const ECHO_DELAY: Duration = Duration::from_millis(1);
/// An empty read this soon after one with data is the writer's echo.
const ECHO_WINDOW: Duration = Duration::from_millis(5);
/// Reads with data in a row after which a key's deferral is dropped (relearnt if it echoes).
const ECHO_FORGET: u32 = 200;
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The hash slot of `key` (`CRC16 mod 16384`; our keys carry no hash tags).
pub fn key_slot(key: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(key.as_bytes()) % SLOTS as u16
}

type Addr = Arc<str>;

/// A reader of a cluster's streams, for the fan-out's reader tasks.
pub struct TrackingLiveReader {
    tracker: Mutex<Tracker>,
    interrupted: Notify,
}

impl TrackingLiveReader {
    pub fn new(seeds: Vec<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            tracker: Mutex::new(Tracker::new(seeds, metrics)),
            interrupted: Notify::new(),
        }
    }
}

#[async_trait]
impl LiveReader for TrackingLiveReader {
    /// Follows exactly `cursors` from now on (each key from its cursor), waits up to `block` for
    /// any of them to change, and returns what is new. Errors are handled inside (reconnect,
    /// re-route, back off): the result may be empty.
    async fn read(
        &self,
        cursors: &[(JobId, StreamId)],
        count: usize,
        block: Duration,
    ) -> StoreResult<Vec<(JobId, Vec<LogEntry>)>> {
        let mut tracker = self.tracker.lock().await;
        tracker.follow(cursors);
        if !tracker
            .wait_for_work(Instant::now() + block, &self.interrupted)
            .await
        {
            return Ok(Vec::new());
        }
        Ok(tracker.read_dirty(count).await)
    }

    async fn interrupt(&self) -> bool {
        // A permit is stored when nobody waits, so an interrupt racing ahead of the wait is
        // not lost.
        self.interrupted.notify_one();
        true
    }
}

struct NodeConn {
    conn: MultiplexedConnection,
    epoch: u64,
}

struct KeyState {
    job: JobId,
    cursor: StreamId,
    slot: u16,
    dirty: bool,
    /// A dirty key is read no earlier than this (echo deferral).
    ready_at: Instant,
    /// When a read of it last returned entries.
    last_data_at: Option<Instant>,
    /// It shows the echo pattern: defer its reads.
    echo: bool,
    clean_streak: u32,
}

struct Tracker {
    seeds: Vec<Addr>,
    /// `user:password@` of the seeds' URL, for every node; empty without credentials.
    auth: String,
    metrics: Arc<Metrics>,
    /// Slot → master address (`None`: unknown or unserved).
    slots: Vec<Option<Addr>>,
    nodes: HashMap<Addr, NodeConn>,
    keys: HashMap<String, KeyState>,
    push_tx: mpsc::UnboundedSender<(Addr, u64, PushInfo)>,
    push_rx: mpsc::UnboundedReceiver<(Addr, u64, PushInfo)>,
    next_epoch: u64,
    next_topology: Instant,
    topology_round: usize,
    /// After a failed read, dirty keys wait until then.
    retry_at: Instant,
    backoff: Duration,
}

/// What one read produced.
enum Outcome {
    Entries(Vec<LogEntry>),
    Redirect {
        ask: bool,
        slot: u16,
        to: Addr,
    },
    Failed {
        node: Addr,
        broken: bool,
        why: String,
    },
}

impl Tracker {
    fn new(seeds: Vec<String>, metrics: Arc<Metrics>) -> Self {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let split = |seed: &str| {
            let rest = seed.trim_start_matches("redis://").trim_end_matches('/');
            match rest.rsplit_once('@') {
                Some((auth, host)) => (format!("{auth}@"), host.to_owned()),
                None => (String::new(), rest.to_owned()),
            }
        };
        Self {
            auth: seeds.first().map(|s| split(s).0).unwrap_or_default(),
            seeds: seeds.iter().map(|s| Addr::from(split(s).1)).collect(),
            metrics,
            slots: vec![None; SLOTS],
            nodes: HashMap::new(),
            keys: HashMap::new(),
            push_tx,
            push_rx,
            next_epoch: 1,
            next_topology: now,
            topology_round: 0,
            retry_at: now,
            backoff: Duration::from_millis(50),
        }
    }

    /// Follows exactly `cursors`: new keys are read at once (which arms their tracking), keys no
    /// longer listed are forgotten, and the caller's cursors are the truth.
    fn follow(&mut self, cursors: &[(JobId, StreamId)]) {
        let listed: HashSet<String> = cursors.iter().map(|(job, _)| job.logs_key()).collect();
        // A forgotten key's tracking stays registered until its next write, which then finds no
        // watcher: one stray push, no read.
        self.keys.retain(|key, _| listed.contains(key));
        let now = Instant::now();
        for (job, cursor) in cursors {
            let key = job.logs_key();
            match self.keys.get_mut(&key) {
                Some(state) => {
                    if state.cursor != *cursor {
                        state.cursor = *cursor;
                        state.dirty = true;
                    }
                }
                None => {
                    let slot = key_slot(&key);
                    self.keys.insert(
                        key,
                        KeyState {
                            job: job.clone(),
                            cursor: *cursor,
                            slot,
                            dirty: true,
                            ready_at: now,
                            last_data_at: None,
                            echo: false,
                            clean_streak: 0,
                        },
                    );
                }
            }
        }
    }

    /// Waits until some key may have news, `deadline` or an interrupt. Cancel-safe: pushes are
    /// applied as they are taken.
    async fn wait_for_work(&mut self, deadline: Instant, interrupted: &Notify) -> bool {
        loop {
            self.drain_pushes();
            if Instant::now() >= self.next_topology {
                self.refresh_topology().await;
                self.drain_pushes();
            }
            let now = Instant::now();
            let next_ready = self
                .keys
                .values()
                .filter(|k| k.dirty)
                .map(|k| k.ready_at)
                .min();
            if now >= self.retry_at && next_ready.is_some_and(|ready| ready <= now) {
                return true;
            }
            if now >= deadline {
                return false;
            }
            let wake = next_ready
                .map_or(self.next_topology, |ready| {
                    ready.max(self.retry_at).min(self.next_topology)
                })
                .min(deadline);
            tokio::select! {
                push = self.push_rx.recv() => {
                    if let Some((node, epoch, push)) = push {
                        self.on_push(&node, epoch, push);
                    }
                }
                () = interrupted.notified() => return false,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn drain_pushes(&mut self) {
        while let Ok((node, epoch, push)) = self.push_rx.try_recv() {
            self.on_push(&node, epoch, push);
        }
    }

    fn on_push(&mut self, node: &Addr, epoch: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key
                            && let Ok(key) = std::str::from_utf8(key)
                            && let Some(state) = self.keys.get_mut(key)
                        {
                            if !state.dirty && state.echo {
                                state.ready_at = Instant::now() + ECHO_DELAY;
                            }
                            state.dirty = true;
                        }
                    }
                }
                // A flush (FLUSHALL) or a server that dropped its tracking table: everything.
                _ => self.mark_node_dirty(node),
            },
            // Only the current connection's loss matters; an older one was already replaced.
            PushKind::Disconnection if self.nodes.get(node).is_some_and(|n| n.epoch == epoch) => {
                self.drop_node(node);
            }
            _ => {}
        }
    }

    /// Forgets a connection: its tracking is gone, so every key it served is read again.
    fn drop_node(&mut self, node: &Addr) {
        self.nodes.remove(node);
        self.mark_node_dirty(node);
        // Whoever serves its slots now, we want to know soon.
        self.next_topology = Instant::now();
    }

    fn mark_node_dirty(&mut self, node: &Addr) {
        for state in self.keys.values_mut() {
            if self.slots[usize::from(state.slot)].as_ref() == Some(node) {
                state.dirty = true;
            }
        }
    }

    /// Reads every dirty key whose master is known, all nodes at once.
    async fn read_dirty(&mut self, count: usize) -> Vec<(JobId, Vec<LogEntry>)> {
        let now = Instant::now();
        let mut by_node: HashMap<Addr, Vec<String>> = HashMap::new();
        for (key, state) in &self.keys {
            if state.dirty
                && state.ready_at <= now
                && let Some(node) = &self.slots[usize::from(state.slot)]
            {
                by_node.entry(node.clone()).or_default().push(key.clone());
            }
        }
        let mut failed = false;
        let mut reads = Vec::new();
        for (node, keys) in by_node {
            let conn = match self.connection(&node).await {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(node = %node, error = %err, "live reader cannot connect");
                    self.metrics.redis_errors.inc();
                    failed = true;
                    self.next_topology = Instant::now();
                    continue;
                }
            };
            for key in keys {
                let state = self.keys.get_mut(&key).expect("listed above");
                // Cleared when sent: an invalidation from now on means "read again".
                state.dirty = false;
                let cmd = xread(&key, state.cursor, count);
                reads.push(read_one(
                    conn.clone(),
                    node.clone(),
                    key,
                    state.slot,
                    cmd,
                    false,
                ));
            }
        }
        let mut results = join_all(reads).await;
        // ASK: read once on the importing node, after ASKING (which arms tracking there).
        let mut asked = Vec::new();
        for (key, outcome) in &mut results {
            let Outcome::Redirect {
                ask: true,
                slot,
                to,
            } = outcome
            else {
                continue;
            };
            let (slot, to) = (*slot, to.clone());
            match (self.connection(&to).await, self.keys.get(key.as_str())) {
                (Ok(conn), Some(state)) => {
                    let cmd = xread(key, state.cursor, count);
                    asked.push(read_one(conn, to, key.clone(), slot, cmd, true));
                }
                _ => {
                    *outcome = Outcome::Failed {
                        node: to,
                        broken: false,
                        why: "no connection to the ASK target".into(),
                    }
                }
            }
        }
        let asked = join_all(asked).await;
        results.retain(|(_, o)| !matches!(o, Outcome::Redirect { ask: true, .. }));
        results.extend(asked);

        let mut out = Vec::new();
        for (key, outcome) in results {
            match outcome {
                Outcome::Entries(entries) => {
                    let Some(state) = self.keys.get_mut(&key) else {
                        continue;
                    };
                    if entries.len() >= count {
                        // More where these came from.
                        state.dirty = true;
                        state.ready_at = now;
                    }
                    // Never backwards, never twice, whatever a node answers.
                    let fresh: Vec<LogEntry> = entries
                        .into_iter()
                        .filter(|e| e.id > state.cursor)
                        .collect();
                    let done = Instant::now();
                    if let Some(last) = fresh.last() {
                        state.cursor = last.id;
                        state.last_data_at = Some(done);
                        state.clean_streak += 1;
                        if state.clean_streak >= ECHO_FORGET {
                            state.echo = false;
                        }
                        out.push((state.job.clone(), fresh));
                    } else if state.last_data_at.is_some_and(|t| done - t < ECHO_WINDOW) {
                        // Woken right after a read with data, and nothing new: an echo.
                        state.echo = true;
                        state.clean_streak = 0;
                    }
                }
                Outcome::Redirect { slot, to, .. } => {
                    // MOVED (or an ASK that bounced again): believe it and read there.
                    self.slots[usize::from(slot)] = Some(to);
                    self.next_topology = Instant::now();
                    if let Some(state) = self.keys.get_mut(&key) {
                        state.dirty = true;
                    }
                }
                Outcome::Failed { node, broken, why } => {
                    tracing::warn!(%key, node = %node, error = %why, "live read failed; retrying");
                    self.metrics.redis_errors.inc();
                    failed = true;
                    if let Some(state) = self.keys.get_mut(&key) {
                        state.dirty = true;
                    }
                    if broken {
                        self.drop_node(&node);
                    }
                }
            }
        }
        if failed {
            self.retry_at = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        } else {
            self.backoff = Duration::from_millis(50);
        }
        out
    }

    /// The tracking connection to `node`: opened (RESP3, pushes tagged with the node and the
    /// connection's epoch, `CLIENT TRACKING ON`) if needed.
    async fn connection(&mut self, node: &Addr) -> anyhow::Result<MultiplexedConnection> {
        if let Some(n) = self.nodes.get(node) {
            return Ok(n.conn.clone());
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let tx = self.push_tx.clone();
        let tag = node.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_push_sender(move |push: PushInfo| tx.send((tag.clone(), epoch, push)));
        let client = redis::Client::open(format!("{}?protocol=resp3", self.url_of(node)))?;
        let connect = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .query_async::<()>(&mut conn)
                .await?;
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg("buildlogs-live-reader")
                .query_async::<()>(&mut conn)
                .await?;
            anyhow::Ok(conn)
        };
        let conn = tokio::time::timeout(COMMAND_TIMEOUT, connect).await??;
        self.nodes.insert(
            node.clone(),
            NodeConn {
                conn: conn.clone(),
                epoch,
            },
        );
        Ok(conn)
    }

    /// `redis://[credentials@]node/`, with the seeds' credentials.
    fn url_of(&self, node: &str) -> String {
        format!("redis://{}{node}/", self.auth)
    }

    /// Asks one node (open connections in turn, then the seeds) for the slot map, and marks
    /// dirty every key whose master changed.
    async fn refresh_topology(&mut self) {
        self.next_topology = Instant::now() + TOPOLOGY_POLL;
        let mut candidates: Vec<Addr> = self.nodes.keys().cloned().collect();
        candidates.sort();
        if !candidates.is_empty() {
            let n = candidates.len();
            candidates.rotate_left(self.topology_round % n);
        }
        self.topology_round += 1;
        candidates.extend(self.seeds.iter().cloned());
        for node in candidates {
            let reply = match self.nodes.get(&node).map(|n| n.conn.clone()) {
                Some(mut conn) => {
                    let reply = redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async::<Value>(&mut conn)
                        .await;
                    if reply.as_ref().is_err_and(|e| {
                        e.is_io_error() || e.is_timeout() || e.is_connection_dropped()
                    }) {
                        self.drop_node(&node);
                    }
                    reply.ok()
                }
                None => self.one_shot_slots(&node).await,
            };
            if let Some(map) = reply.and_then(parse_slots) {
                self.apply_slot_map(map);
                return;
            }
        }
    }

    async fn one_shot_slots(&self, node: &str) -> Option<Value> {
        let fetch = async {
            let client = redis::Client::open(self.url_of(node)).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn)
                .await
                .ok()
        };
        tokio::time::timeout(COMMAND_TIMEOUT, fetch)
            .await
            .ok()
            .flatten()
    }

    fn apply_slot_map(&mut self, ranges: Vec<(u16, u16, Addr)>) {
        let mut fresh: Vec<Option<Addr>> = vec![None; SLOTS];
        for (start, end, node) in ranges {
            let end = usize::from(end).min(SLOTS - 1);
            if let Some(range) = fresh.get_mut(usize::from(start)..=end) {
                range.fill(Some(node));
            }
        }
        for state in self.keys.values_mut() {
            let slot = usize::from(state.slot);
            if fresh[slot] != self.slots[slot] {
                state.dirty = true;
            }
        }
        self.slots = fresh;
        // Connections to nodes that serve nothing any more are closed.
        let serving: HashSet<&Addr> = self.slots.iter().flatten().collect();
        self.nodes.retain(|node, _| serving.contains(node));
    }
}

fn xread(key: &str, after: StreamId, count: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(key)
        .arg(after.to_string());
    cmd
}

async fn read_one(
    mut conn: MultiplexedConnection,
    node: Addr,
    key: String,
    slot: u16,
    cmd: redis::Cmd,
    asking: bool,
) -> (String, Outcome) {
    let reply = if asking {
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").ignore().add_command(cmd);
        tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<(Value,)>(&mut conn))
            .await
            .map(|r| r.map(|(v,)| v))
    } else {
        tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<Value>(&mut conn)).await
    };
    let outcome = match reply {
        Ok(Ok(value)) => match parse_xread_one(value) {
            Ok(entries) => Outcome::Entries(entries),
            Err(why) => Outcome::Failed {
                node,
                broken: false,
                why,
            },
        },
        Ok(Err(err)) => classify(err, node, slot),
        Err(_) => Outcome::Failed {
            node,
            broken: true,
            why: "timed out".into(),
        },
    };
    (key, outcome)
}

fn classify(err: RedisError, node: Addr, slot: u16) -> Outcome {
    if err.code() == Some("WRONGTYPE") {
        // A logs key of another type is a stream with nothing to send yet (contract §1), not
        // a failed read that would hold back the others' reads.
        tracing::warn!(node = %node, "a logs key is not a stream; serving it as no stream");
        return Outcome::Entries(Vec::new());
    }
    if let Some((to, _)) = err.redirect_node() {
        let ask = matches!(err.kind(), ErrorKind::Server(ServerErrorKind::Ask));
        return Outcome::Redirect {
            ask,
            slot,
            to: to.into(),
        };
    }
    Outcome::Failed {
        node,
        broken: err.is_io_error()
            || err.is_connection_dropped()
            || err.is_timeout()
            || err.is_unrecoverable_error(),
        why: err.to_string(),
    }
}

/// The entries of a one-key `XREAD` reply (RESP3 map or RESP2 array; nil for none).
fn parse_xread_one(value: Value) -> Result<Vec<LogEntry>, String> {
    let streams: Vec<Value> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(map) => map.into_iter().map(|(_, v)| v).collect(),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        _ => return Err("unexpected XREAD reply".into()),
    };
    let mut out = Vec::new();
    for entries in streams {
        out.extend(parse_entries(entries).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// `CLUSTER SLOTS` → `(start, end, master)`.
fn parse_slots(reply: Value) -> Option<Vec<(u16, u16, Addr)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let Value::Array(master) = parts.get(2)? else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = int(master.get(1)?)?;
        out.push((
            int(parts.first()?)?,
            int(parts.get(1)?)?,
            Addr::from(format!("{host}:{port}")),
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_the_cluster_s() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("123456789"), 0x31C3);
    }
}
