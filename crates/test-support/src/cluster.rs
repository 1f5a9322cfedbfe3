//! A throwaway local Redis Cluster for tests and benchmarks.
//!
//! [`RedisCluster::start`] launches `masters × (1 + replicas_per_master)` `redis-server`
//! processes (3 masters + 3 replicas by default) on free loopback ports, joins them with
//! `redis-cli --cluster create`, and returns once every live node reports `cluster_state:ok` and
//! all of them agree on the owner of every one of the 16384 slots (and every replica has synced).
//! Dropping the value SIGKILLs every node and removes its scratch directory.
//!
//! The cluster is meant to be abused: [`RedisCluster::kill_master`] +
//! [`RedisCluster::wait_for_failover`] promote a replica; [`RedisCluster::begin_migration`] moves a
//! slot step by step (so a test can write while the slot is `MIGRATING`/`IMPORTING`, or while
//! some keys have moved and others not), and [`RedisCluster::migrate_slot`] does it in one go.
//!
//! Everything here is synchronous (std processes and redis-rs's blocking connection). From async
//! code, call [`RedisCluster::start_async`] and wrap other calls with [`RedisCluster::blocking`]
//! (an `Arc<RedisCluster>` and `spawn_blocking`) so the runtime's workers never stall.
//!
//! Ports: each node's port `P` is below 55536 and both `P` and its cluster-bus port `P + 10000`
//! were free when chosen; 6379/16379 are never used. A node that still loses a race for its port
//! is relaunched on another one.

use std::{
    collections::{BTreeMap, HashSet},
    fmt, fs,
    hash::{BuildHasher, Hasher},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use redis::Value;

pub use crate::slot::{SLOTS, key_slot};

/// How a cluster is laid out and launched.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Masters; the 16384 slots are split evenly between them. At least 3 (`redis-cli` refuses fewer).
    pub masters: usize,
    /// Replicas of each master.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before it is failed over.
    pub node_timeout: Duration,
    /// The `redis-server` executable.
    pub redis_server: PathBuf,
    /// The `redis-cli` executable (only `--cluster create` uses it).
    pub redis_cli: PathBuf,
    /// Upper bound for start-up and for each wait helper unless given its own.
    pub timeout: Duration,
    /// Extra `redis-server` arguments (`["--maxmemory", "100mb"]`), appended to every node's.
    pub extra_args: Vec<String>,
    /// Keep the scratch directory (node logs, `nodes-P.conf`) on drop, for post-mortems.
    pub keep_dir: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas_per_master: 1,
            node_timeout: Duration::from_millis(1000),
            redis_server: PathBuf::from("redis-server"),
            redis_cli: PathBuf::from("redis-cli"),
            timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
            keep_dir: false,
        }
    }
}

/// One contiguous range of slots and the master serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    /// `host:port` of the master.
    pub master: String,
    /// `host:port` of its replicas, as the answering node sees them.
    pub replicas: Vec<String>,
}

/// The cluster's slot → master map as one node sees it (`CLUSTER SLOTS`), sorted by slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap(pub Vec<SlotRange>);

impl SlotMap {
    /// The master of `slot`, if any node serves it.
    pub fn master_of(&self, slot: u16) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .map(|r| r.master.as_str())
    }

    /// Distinct masters, in slot order.
    pub fn masters(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.0
            .iter()
            .filter(|r| seen.insert(r.master.clone()))
            .map(|r| r.master.clone())
            .collect()
    }

    /// Slots served, counted.
    pub fn covered(&self) -> usize {
        self.0
            .iter()
            .map(|r| usize::from(r.end - r.start) + 1)
            .sum()
    }

    /// Only who owns what (replica lists differ between observers while gossip settles).
    fn ownership(&self) -> Vec<(u16, u16, &str)> {
        self.0
            .iter()
            .map(|r| (r.start, r.end, r.master.as_str()))
            .collect()
    }
}

/// What a node process is doing.
#[derive(Debug)]
struct Node {
    port: u16,
    /// `None` once killed.
    child: Option<Child>,
    /// The cluster node id (`CLUSTER MYID`); survives restarts through `nodes-P.conf`.
    id: String,
    /// SIGSTOPped: running but deaf; left out of [`RedisCluster::live_addrs`].
    frozen: bool,
}

/// A running local Redis Cluster; every node is killed and its files removed on drop.
pub struct RedisCluster {
    config: ClusterConfig,
    dir: PathBuf,
    nodes: Mutex<Vec<Node>>,
    /// Time `start` took, for reports.
    startup: StartupTimings,
}

/// Where start-up time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartupTimings {
    /// Spawning every `redis-server` until each logged "Ready to accept connections".
    pub launch: Duration,
    /// `redis-cli --cluster create` (it polls the join once a second).
    pub create: Duration,
    /// Until every node agrees on all slots and replicas are synced.
    pub settle: Duration,
}

impl StartupTimings {
    pub fn total(&self) -> Duration {
        self.launch + self.create + self.settle
    }
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("dir", &self.dir)
            .field("ports", &self.ports())
            .finish_non_exhaustive()
    }
}

const HOST: &str = "127.0.0.1";
const BUS_OFFSET: u16 = 10000;
const POLL: Duration = Duration::from_millis(20);
/// Per-command timeout of the launcher's own connections to nodes.
const NODE_IO_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisCluster {
    /// Starts 3 masters + 3 replicas with [`ClusterConfig::default`].
    pub fn start() -> Result<Self> {
        Self::start_with(ClusterConfig::default())
    }

    /// Starts a cluster laid out as `config` says and waits until it is fully formed.
    pub fn start_with(config: ClusterConfig) -> Result<Self> {
        ensure!(
            config.masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let started = Instant::now();
        let dir = scratch_dir()?;
        let mut cluster = Self {
            config,
            dir,
            nodes: Mutex::new(Vec::new()),
            startup: StartupTimings::default(),
        };
        // On any error below, dropping `cluster` kills what was started.
        let total = cluster.config.masters * (1 + cluster.config.replicas_per_master);
        cluster.launch_nodes(total)?;
        cluster.startup.launch = started.elapsed();
        cluster.create()?;
        cluster.startup.create = started.elapsed() - cluster.startup.launch;
        cluster.wait_until_stable(true, cluster.config.timeout)?;
        cluster.startup.settle =
            started.elapsed() - cluster.startup.launch - cluster.startup.create;
        Ok(cluster)
    }

    /// [`Self::start`] off the async runtime's worker threads.
    pub async fn start_async() -> Result<Arc<Self>> {
        Self::start_with_async(ClusterConfig::default()).await
    }

    /// [`Self::start_with`] off the async runtime's worker threads.
    pub async fn start_with_async(config: ClusterConfig) -> Result<Arc<Self>> {
        tokio::task::spawn_blocking(move || Self::start_with(config).map(Arc::new))
            .await
            .context("cluster start-up panicked")?
    }

    /// Runs a blocking helper (`|c| c.kill_master(&addr)`) on tokio's blocking pool.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&RedisCluster) -> Result<T> + Send + 'static,
    {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .context("cluster helper panicked")?
    }

    /// How long [`Self::start`] took, launch to fully formed, by phase.
    pub fn startup_time(&self) -> StartupTimings {
        self.startup
    }

    /// The scratch directory: `node-P.log`, `nodes-P.conf` of every node.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every node's port, killed ones included, in launch order.
    pub fn ports(&self) -> Vec<u16> {
        self.lock().iter().map(|n| n.port).collect()
    }

    /// `host:port` of every node that has not been killed (or frozen).
    pub fn live_addrs(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|n| n.child.is_some() && !n.frozen)
            .map(|n| addr(n.port))
            .collect()
    }

    /// `redis://host:port/` of every live node: seeds for `ClusterClient::new`.
    pub fn seed_urls(&self) -> Vec<String> {
        self.live_addrs()
            .iter()
            .map(|a| format!("redis://{a}/"))
            .collect()
    }

    /// `redis+cluster://h:p,h:p,.../` naming every live node (buildlogs' `REDIS_URL` form).
    pub fn cluster_url(&self) -> String {
        format!("redis+cluster://{}/", self.live_addrs().join(","))
    }

    /// The slot map as the first live node that answers sees it.
    pub fn slot_map(&self) -> Result<SlotMap> {
        let mut last_err = anyhow!("no live node");
        for a in self.live_addrs() {
            match slot_map_of(&a) {
                Ok(map) => return Ok(map),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// `host:port` of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> Result<String> {
        ensure!(slot < SLOTS, "slot {slot} out of range");
        self.slot_map()?
            .master_of(slot)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no master serves slot {slot}"))
    }

    /// `host:port` of the master serving `key`.
    pub fn master_for_key(&self, key: impl AsRef<[u8]>) -> Result<String> {
        self.master_of_slot(key_slot(key))
    }

    /// Current masters (nodes that serve slots), in slot order.
    pub fn masters(&self) -> Result<Vec<String>> {
        Ok(self.slot_map()?.masters())
    }

    /// The cluster node id of the node at `addr`.
    pub fn node_id(&self, addr: &str) -> Result<String> {
        let port = port_of(addr)?;
        self.lock()
            .iter()
            .find(|n| n.port == port)
            .map(|n| n.id.clone())
            .ok_or_else(|| anyhow!("{addr} is not a node of this cluster"))
    }

    /// Runs one command on the node at `addr` (no redirection), with a short timeout.
    pub fn node_cmd(&self, addr: &str, cmd: &redis::Cmd) -> Result<Value> {
        node_query(addr, cmd)
    }

    /// SIGKILLs the node at `addr`, whatever its role.
    pub fn kill_node(&self, addr: &str) -> Result<()> {
        let port = port_of(addr)?;
        let mut nodes = self.lock();
        let node = nodes
            .iter_mut()
            .find(|n| n.port == port)
            .ok_or_else(|| anyhow!("{addr} is not a node of this cluster"))?;
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("{addr} was already killed"))?;
        // `Child::kill` is SIGKILL on Unix: no goodbye to the cluster, like a crash.
        child.kill().with_context(|| format!("killing {addr}"))?;
        child.wait().with_context(|| format!("reaping {addr}"))?;
        Ok(())
    }

    /// Stops the node at `addr` with SIGSTOP: it keeps its sockets open but answers nothing, like
    /// a hung host. Past `cluster-node-timeout` a replica takes over. Undo with [`Self::thaw_node`].
    pub fn freeze_node(&self, addr: &str) -> Result<()> {
        self.signal(addr, "-STOP")
    }

    /// Resumes a node stopped by [`Self::freeze_node`] (it rejoins; a failed-over master becomes
    /// a replica).
    pub fn thaw_node(&self, addr: &str) -> Result<()> {
        self.signal(addr, "-CONT")
    }

    fn signal(&self, addr: &str, signal: &str) -> Result<()> {
        let port = port_of(addr)?;
        let mut nodes = self.lock();
        let node = nodes
            .iter_mut()
            .find(|n| n.port == port && n.child.is_some())
            .ok_or_else(|| anyhow!("{addr} is not a running node of this cluster"))?;
        let pid = node.child.as_ref().map(Child::id).unwrap_or_default();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .context("running kill")?;
        ensure!(status.success(), "kill {signal} {pid} failed: {status}");
        node.frozen = signal == "-STOP";
        Ok(())
    }

    /// `host:port` of the replicas connected to the (live) master at `addr`, as the master itself
    /// reports them (`INFO replication`; gossip may lag behind it).
    pub fn replicas_of(&self, addr: &str) -> Result<Vec<String>> {
        let info = text(&node_query(addr, redis::cmd("INFO").arg("replication"))?)?;
        let mut out = Vec::new();
        for line in info.lines().filter(|l| l.starts_with("slave")) {
            // slave0:ip=127.0.0.1,port=40251,state=online,offset=..,lag=..
            let Some((_, fields)) = line.split_once(':') else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            if let (Some(ip), Some(port)) = (field("ip"), field("port")) {
                out.push(format!("{ip}:{port}"));
            }
        }
        Ok(out)
    }

    /// Waits until every live node says `cluster_state:fail` (some slot has no reachable master).
    pub fn wait_for_cluster_down(&self) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        loop {
            let all_down = self.live_addrs().iter().all(|a| {
                node_query(a, redis::cmd("CLUSTER").arg("INFO"))
                    .and_then(|v| text(&v))
                    .is_ok_and(|info| info.lines().any(|l| l == "cluster_state:fail"))
            });
            if all_down {
                return Ok(started.elapsed());
            }
            ensure!(
                Instant::now() < deadline,
                "cluster still up after {:?}",
                self.config.timeout
            );
            thread::sleep(POLL);
        }
    }

    /// SIGKILLs the master at `addr`; fails if `addr` serves no slot.
    pub fn kill_master(&self, addr: &str) -> Result<()> {
        ensure!(
            self.masters()?.iter().any(|m| m == addr),
            "{addr} is not a master"
        );
        self.kill_node(addr)
    }

    /// Waits until a replica has taken over every slot of killed masters: every live node says
    /// `cluster_state:ok`, and all agree on a slot map whose masters are all alive. Returns how
    /// long it waited.
    pub fn wait_for_failover(&self) -> Result<Duration> {
        let started = Instant::now();
        self.wait_until_stable(false, self.config.timeout)?;
        Ok(started.elapsed())
    }

    /// Starts a killed node again on its old port and directory; it rejoins (as a replica if it
    /// was failed over). Waits until the cluster is stable again.
    pub fn restart_node(&self, addr: &str) -> Result<()> {
        let port = port_of(addr)?;
        {
            let nodes = self.lock();
            let node = nodes
                .iter()
                .find(|n| n.port == port)
                .ok_or_else(|| anyhow!("{addr} is not a node of this cluster"))?;
            ensure!(node.child.is_none(), "{addr} is running");
        }
        // The old log already says "Ready": keep it aside so readiness means this run.
        let log = self.log_path(port);
        let _ = fs::rename(&log, log.with_extension("log.previous"));
        let mut child = self.spawn_node(port)?;
        if let Err(e) = wait_ready(&mut child, &log, self.config.timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        if let Some(node) = self.lock().iter_mut().find(|n| n.port == port) {
            node.child = Some(child);
        }
        self.wait_until_stable(true, self.config.timeout)
    }

    /// Moves `slot` to the master at `to`, all steps at once. See [`Self::begin_migration`].
    pub fn migrate_slot(&self, slot: u16, to: &str) -> Result<()> {
        let migration = self.begin_migration(slot, to)?;
        migration.move_keys(100)?;
        migration.finish(self)
    }

    /// Marks `slot` `IMPORTING` on `to` and `MIGRATING` on its current master, and returns the
    /// migration so the caller decides when keys move ([`SlotMigration::move_keys`],
    /// [`SlotMigration::move_key`]) and when ownership flips ([`SlotMigration::finish`]).
    ///
    /// While it is in progress, a command for a key still on the source is served there; one for
    /// a key already moved (or new) gets `-ASK slot host:port` towards `to`.
    pub fn begin_migration(&self, slot: u16, to: &str) -> Result<SlotMigration> {
        let from = self.master_of_slot(slot)?;
        ensure!(from != to, "slot {slot} is already served by {to}");
        ensure!(
            self.masters()?.iter().any(|m| m == to),
            "{to} is not a master"
        );
        let migration = SlotMigration {
            slot,
            from_id: self.node_id(&from)?,
            to_id: self.node_id(to)?,
            from,
            to: to.to_owned(),
        };
        // Importing first, so no request is ever ASK-redirected to a node that refuses it.
        node_query(
            &migration.to,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&migration.from_id),
        )?;
        node_query(
            &migration.from,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&migration.to_id),
        )?;
        Ok(migration)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_path(&self, port: u16) -> PathBuf {
        self.dir.join(format!("node-{port}.log"))
    }

    fn spawn_node(&self, port: u16) -> Result<Child> {
        let dir = self.dir.to_str().context("scratch dir is not UTF-8")?;
        let timeout_ms = self.config.node_timeout.as_millis().to_string();
        Command::new(&self.config.redis_server)
            .args(["--port", &port.to_string(), "--bind", HOST])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args(["--cluster-node-timeout", &timeout_ms])
            // Fail over whatever the replica's last contact, and keep replicas where they are.
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--cluster-allow-replica-migration", "no"])
            // Full syncs at once, not after the default 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--appendonly", "no", "--save", ""])
            .args(["--dir", dir, "--daemonize", "no", "--loglevel", "notice"])
            .arg("--logfile")
            .arg(self.log_path(port))
            .args(&self.config.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {:?}", self.config.redis_server))
    }

    /// Launches `total` nodes in parallel, each on a fresh free port, relaunching any that loses
    /// its port to another process.
    fn launch_nodes(&mut self, total: usize) -> Result<()> {
        let mut taken = HashSet::new();
        let mut pending: Vec<(u16, Child)> = Vec::new();
        for _ in 0..total {
            let port = free_port_pair(&mut taken)?;
            pending.push((port, self.spawn_node(port)?));
        }
        let deadline = Instant::now() + self.config.timeout;
        let mut relaunches = 0;
        while let Some((port, mut child)) = pending.pop() {
            let left = deadline.saturating_duration_since(Instant::now());
            match wait_ready(&mut child, &self.log_path(port), left) {
                Ok(()) => {
                    let id = node_query(&addr(port), redis::cmd("CLUSTER").arg("MYID"))
                        .and_then(|v| text(&v).context("CLUSTER MYID"))?;
                    self.lock().push(Node {
                        port,
                        child: Some(child),
                        id,
                        frozen: false,
                    });
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(self.log_path(port)).unwrap_or_default();
                    if log.contains("Address already in use") && relaunches < 10 {
                        relaunches += 1;
                        let port = free_port_pair(&mut taken)?;
                        pending.push((port, self.spawn_node(port)?));
                    } else {
                        for (_, mut c) in pending {
                            let _ = c.kill();
                            let _ = c.wait();
                        }
                        return Err(err);
                    }
                }
            }
        }
        // Launch order: `redis-cli` makes the first `masters` nodes masters.
        self.lock().sort_by_key(|n| n.port);
        Ok(())
    }

    /// `redis-cli --cluster create`: assigns slots, meets the nodes, attaches replicas.
    fn create(&self) -> Result<()> {
        let addrs = self.live_addrs();
        let output = Command::new(&self.config.redis_cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args([
                "--cluster-replicas",
                &self.config.replicas_per_master.to_string(),
                "--cluster-yes",
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {:?}", self.config.redis_cli))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success() && stdout.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Polls until every live node says `cluster_state:ok` with all slots ok, all live nodes
    /// report the same owners for all 16384 slots, every owner is alive, and (`replicas_synced`)
    /// every live replica's link to its master is up.
    fn wait_until_stable(&self, replicas_synced: bool, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let why_not = match self.stable(replicas_synced) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(why_not.context(format!("cluster not stable after {timeout:?}")));
            }
            thread::sleep(POLL);
        }
    }

    fn stable(&self, replicas_synced: bool) -> Result<()> {
        let live = self.live_addrs();
        let mut reference: Option<(String, SlotMap)> = None;
        let mut roles = Vec::new();
        for a in &live {
            let info = text(&node_query(a, redis::cmd("CLUSTER").arg("INFO"))?)?;
            for want in ["cluster_state:ok", "cluster_slots_ok:16384"] {
                ensure!(info.lines().any(|l| l == want), "{a}: no {want} yet");
            }
            let map = slot_map_of(a)?;
            ensure!(
                map.covered() == usize::from(SLOTS),
                "{a} sees uncovered slots"
            );
            match &reference {
                None => reference = Some((a.clone(), map)),
                Some((first, seen)) => ensure!(
                    seen.ownership() == map.ownership(),
                    "{a} and {first} disagree on slot owners"
                ),
            }
            if replicas_synced {
                let repl = text(&node_query(a, redis::cmd("INFO").arg("replication"))?)?;
                roles.push((a.clone(), repl));
            }
        }
        let (_, map) = reference.ok_or_else(|| anyhow!("no live node"))?;
        let masters = map.masters();
        for m in &masters {
            ensure!(live.contains(m), "slots still owned by dead {m}");
        }
        // Every node that serves no slot is a replica whose link is up (a restarted, failed-over
        // master first comes back as an empty master, then turns replica).
        for (a, repl) in roles {
            if !masters.contains(&a) {
                ensure!(
                    repl.contains("role:slave") && repl.contains("master_link_status:up"),
                    "{a}: not a synced replica yet"
                );
            }
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.lock().iter_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !self.config.keep_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A slot migration under way; see [`RedisCluster::begin_migration`]. Plain data, so it can be
/// carried into [`RedisCluster::blocking`] closures.
#[derive(Clone, Debug)]
pub struct SlotMigration {
    pub slot: u16,
    /// `host:port` of the source and target masters.
    pub from: String,
    pub to: String,
    from_id: String,
    to_id: String,
}

impl SlotMigration {
    /// Moves every key still in the slot on the source, `batch` keys per `MIGRATE`. Returns how
    /// many moved.
    pub fn move_keys(&self, batch: usize) -> Result<usize> {
        let mut moved = 0;
        loop {
            let keys = node_query(
                &self.from,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(self.slot)
                    .arg(batch.max(1)),
            )?;
            let keys: Vec<Vec<u8>> =
                redis::from_redis_value(keys).map_err(|e| anyhow!("GETKEYSINSLOT reply: {e}"))?;
            if keys.is_empty() {
                return Ok(moved);
            }
            moved += keys.len();
            self.migrate(&keys)?;
        }
    }

    /// Moves one key (it must be in the slot and still on the source).
    pub fn move_key(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        ensure!(
            key_slot(key) == self.slot,
            "key is not in slot {}",
            self.slot
        );
        self.migrate(&[key.to_vec()])
    }

    fn migrate(&self, keys: &[Vec<u8>]) -> Result<()> {
        let (host, port) = self.to.rsplit_once(':').context("target address")?;
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(host).arg(port).arg("").arg(0).arg(5000).arg("KEYS");
        for key in keys {
            cmd.arg(key.as_slice());
        }
        node_query(&self.from, &cmd).map(drop)
    }

    /// Moves any keys left, then assigns the slot to the target: `SETSLOT NODE` on the target,
    /// then the source, then every other master (the order the cluster specification gives), and
    /// waits until every live node agrees.
    pub fn finish(&self, cluster: &RedisCluster) -> Result<()> {
        self.move_keys(100)?;
        let setslot = {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(self.slot).arg("NODE").arg(&self.to_id);
            c
        };
        node_query(&self.to, &setslot)?;
        node_query(&self.from, &setslot)?;
        for m in cluster.masters()? {
            if m != self.to && m != self.from {
                node_query(&m, &setslot)?;
            }
        }
        let deadline = Instant::now() + cluster.config.timeout;
        loop {
            let agreed = cluster.live_addrs().iter().all(|a| {
                slot_map_of(a).is_ok_and(|m| m.master_of(self.slot) == Some(self.to.as_str()))
            });
            if agreed {
                return cluster.wait_until_stable(false, cluster.config.timeout);
            }
            ensure!(
                Instant::now() < deadline,
                "nodes do not agree that {} serves slot {}",
                self.to,
                self.slot
            );
            thread::sleep(POLL);
        }
    }
}

fn addr(port: u16) -> String {
    format!("{HOST}:{port}")
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| anyhow!("not a host:port address: {addr}"))
}

/// A unique, empty scratch directory under the system temp dir.
pub(crate) fn scratch_dir() -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "redis-cluster-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        random_u64() % 1_000_000
    );
    let dir = std::env::temp_dir().join(name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A port below 55536 such that it and its bus port are free now, avoiding 6379/16379 and every
/// port (and bus port) already in `taken`.
pub(crate) fn free_port_pair(taken: &mut HashSet<u16>) -> Result<u16> {
    const LOW: u16 = 20000;
    const HIGH: u16 = 55535; // so that port + 10000 <= 65535
    for _ in 0..1000 {
        let port = LOW + (random_u64() % u64::from(HIGH - LOW + 1)) as u16;
        let bus = port + BUS_OFFSET;
        if [port, bus]
            .iter()
            .any(|p| *p == 6379 || *p == 16379 || taken.contains(p))
        {
            continue;
        }
        if TcpListener::bind((HOST, port)).is_ok() && TcpListener::bind((HOST, bus)).is_ok() {
            taken.insert(port);
            taken.insert(bus);
            return Ok(port);
        }
    }
    bail!("found no free port pair in {LOW}..={HIGH}")
}

/// Waits for "Ready to accept connections" in the node's log, or its early exit.
pub(crate) fn wait_ready(child: &mut Child, log: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if fs::read_to_string(log).is_ok_and(|l| l.contains("Ready to accept connections")) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let tail = fs::read_to_string(log).unwrap_or_default();
            bail!(
                "redis-server exited ({status}) before it was ready; {}:\n{}",
                log.display(),
                last_lines(&tail, 10)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "redis-server not ready after {timeout:?} ({})",
            log.display()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One command on one node, on a fresh connection with short timeouts.
fn node_query(addr: &str, cmd: &redis::Cmd) -> Result<Value> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut conn = client
        .get_connection_with_timeout(NODE_IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(NODE_IO_TIMEOUT))?;
    conn.set_write_timeout(Some(NODE_IO_TIMEOUT))?;
    cmd.query::<Value>(&mut conn)
        .with_context(|| format!("{addr}: {}", command_name(cmd)))
}

fn command_name(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .take(2)
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn text(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        other => bail!("expected text, got {other:?}"),
    }
}

/// `CLUSTER SLOTS` of one node: `[[start, end, [ip, port, id, ..], replicas..], ..]`.
fn slot_map_of(addr: &str) -> Result<SlotMap> {
    let reply = node_query(addr, redis::cmd("CLUSTER").arg("SLOTS"))?;
    let Value::Array(ranges) = reply else {
        bail!("{addr}: CLUSTER SLOTS is not an array");
    };
    let mut out = BTreeMap::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            bail!("{addr}: bad CLUSTER SLOTS entry");
        };
        let int = |v: &Value| match v {
            Value::Int(i) => u16::try_from(*i).ok(),
            _ => None,
        };
        let node = |v: &Value| -> Option<String> {
            let Value::Array(n) = v else { return None };
            let host = text(n.first()?).ok()?;
            let port = int(n.get(1)?)?;
            Some(format!("{host}:{port}"))
        };
        let (Some(start), Some(end), Some(master)) = (
            parts.first().and_then(int),
            parts.get(1).and_then(int),
            parts.get(2).and_then(node),
        ) else {
            bail!("{addr}: bad CLUSTER SLOTS entry");
        };
        let replicas = parts.iter().skip(3).filter_map(node).collect();
        out.insert(
            start,
            SlotRange {
                start,
                end,
                master,
                replicas,
            },
        );
    }
    Ok(SlotMap(out.into_values().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pairs_are_distinct_and_in_range() {
        let mut taken = HashSet::new();
        let ports: Vec<u16> = (0..12)
            .map(|_| free_port_pair(&mut taken).expect("free ports"))
            .collect();
        for p in &ports {
            assert!(*p < 55536 && *p != 6379);
        }
        assert_eq!(taken.len(), 24, "ports and bus ports never collide");
    }
}
