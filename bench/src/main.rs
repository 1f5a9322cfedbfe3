//! `buildlogs-bench`: measures the contract's performance targets (§7) against a real server
//! process and a real `redis-server`, both started here on free loopback ports.
//!
//! ```sh
//! cargo build --release -p buildlogs-bench
//! ./target/release/buildlogs-bench                                      # the §7 scenarios, both modes
//! ./target/release/buildlogs-bench --scenarios fanout --secs 10         # one scenario, shorter
//! ```
//!
//! The server runs as a process of its own: this binary again (`buildlogs-bench serve`, the
//! service built with the `bench-naive` feature, so that `LIVE_MODE=naive` exists), or, for
//! the fan-out mode, any `--server-bin` such as the product's `target/release/buildlogs`.
//!
//! Scenarios: `fanout` (1 job, 2,000 viewers, 50 lines/s), `many` (500 jobs × 2 viewers,
//! 10 lines/s each, the jobs' lines spread evenly over each tick, with history requests
//! alongside), `idle` (10,000 streams on heartbeats),
//! `history` (pages of 100 from a 100,000-line stream, 64 concurrent clients, against a bare
//! Redis client doing the same reads), `download` and `search` (a 1,000,000-line log as text,
//! and scanned for a rare `q`, each against a bare `XRANGE … COUNT 1000` client in the same run;
//! see `readlog.rs`); and two floors that run no buildlogs at all, `floor` (a
//! bare `XREAD BLOCK` client) and `sendfloor` (a bare socket server fanning lines out to
//! `--viewers` connections). The live scenarios run once per `--modes` entry (`fanout`,
//! `naive`), so the shared-reader engine and the per-viewer design are measured side by side.
//! Every line carries its append time; viewers record append-to-receipt latency and check that
//! they saw every line, in order. `soak` (not in the default set; its own module) runs viewers
//! over many users' jobs for as long as `--secs` says, and exits non-zero when a viewer missed a
//! line or went silent, or a stream slot stayed open.
#![forbid(unsafe_code)]

mod soak;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod readlog;

use anyhow::{Context as _, bail};
use buildlogs::dev::{Signer, generate_rsa_pem};
use buildlogs_test_support::{ClusterConfig, RedisCluster, RedisServer, free_port};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks buildlogs against the contract's performance targets")]
struct Args {
    /// Scenarios, comma-separated: fanout, many, idle, history, download, search; and two floors
    /// without buildlogs:
    /// floor (a bare `XREAD` client: Redis's own latency) and sendfloor (a bare socket server
    /// sending each line to `--viewers` connections: the machine's own fan-out latency); and
    /// soak (viewers joining, leaving, stalling and renewing tokens over bursty jobs for `--secs`;
    /// it fails, with a non-zero exit, unless every viewer that stayed got every line).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fanout,many,idle,history,download,search"
    )]
    scenarios: Vec<String>,
    /// Where the fanout and many scenarios' logs are, comma-separated: single (one Redis),
    /// cluster (a local Redis Cluster of 3 masters and 3 replicas). Each runs in turn.
    #[arg(long, value_delimiter = ',', default_value = "single")]
    backends: Vec<String>,
    /// Live modes for the fanout and many scenarios, comma-separated: fanout, naive.
    #[arg(long, value_delimiter = ',', default_value = "fanout,naive")]
    modes: Vec<String>,
    /// Seconds of load in each live scenario (the contract's fan-out target says 30).
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Viewers of the one job in `fanout`.
    #[arg(long, default_value_t = 2000)]
    viewers: usize,
    /// Lines per second in `fanout`.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Jobs in `many` (each with 2 viewers).
    #[arg(long, default_value_t = 500)]
    jobs: usize,
    /// Streams in `idle`.
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Viewers in `soak`, over `--soak-jobs` jobs (each of its own user).
    #[arg(long, default_value_t = 2000)]
    soak_viewers: usize,
    /// Jobs in `soak`.
    #[arg(long, default_value_t = 100)]
    soak_jobs: usize,
    /// Seed of `soak`'s random plan (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// The server binary for the fan-out mode, run as `<bin> serve` (default: this binary,
    /// whose `serve` is the service). The naive mode always runs this binary.
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

const USER: &str = "user_bench";

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Our own `redis-server`, with room for the naive design's connection per viewer.
fn start_redis() -> RedisServer {
    RedisServer::start_with(&["--maxclients", "15000"])
}

async fn redis_conn(redis: &RedisServer) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis.client().get_multiplexed_async_connection().await?)
}

/// Read commands served so far (what buildlogs asks of Redis), and connected clients.
async fn redis_stats(redis: &RedisServer) -> anyhow::Result<(u64, u64)> {
    node_stats(&redis.url()).await
}

/// [`redis_stats`] of one node, by URL.
async fn node_stats(url: &str) -> anyhow::Result<(u64, u64)> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let mut reads = 0;
    for line in info.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if [
            "xread",
            "xrange",
            "xrevrange",
            "xinfo|stream",
            "hget",
            "hmget",
            "client|unblock",
        ]
        .contains(&name)
        {
            reads += rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let clients: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut conn)
        .await?;
    let connected = clients
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Minus this connection.
    Ok((reads, connected.saturating_sub(1)))
}

/// Where the live scenarios' logs are: one Redis, or a local Redis Cluster (3 masters, 3
/// replicas).
enum Backend {
    Single(RedisServer),
    Cluster(Arc<RedisCluster>),
}

impl Backend {
    async fn start(kind: &str) -> anyhow::Result<Self> {
        Ok(match kind {
            "single" => Self::Single(start_redis()),
            "cluster" => Self::Cluster(
                RedisCluster::start_with_async(ClusterConfig {
                    extra_args: vec!["--maxclients".into(), "15000".into()],
                    ..ClusterConfig::default()
                })
                .await?,
            ),
            other => bail!("unknown backend {other} (single, cluster)"),
        })
    }

    fn url(&self) -> String {
        match self {
            Self::Single(redis) => redis.url(),
            Self::Cluster(cluster) => cluster.cluster_url(),
        }
    }

    async fn writer(&self) -> anyhow::Result<Writer> {
        Ok(match self {
            Self::Single(redis) => Writer::Single(redis_conn(redis).await?),
            Self::Cluster(cluster) => Writer::Cluster(
                redis::cluster::ClusterClient::new(cluster.seed_urls())?
                    .get_async_connection()
                    .await?,
            ),
        })
    }

    /// Reads served and connections held, summed over the masters of a cluster.
    async fn stats(&self) -> anyhow::Result<(u64, u64)> {
        match self {
            Self::Single(redis) => redis_stats(redis).await,
            Self::Cluster(cluster) => {
                let mut total = (0, 0);
                for master in cluster.blocking(|c| c.masters()).await? {
                    let (reads, conns) = node_stats(&format!("redis://{master}/")).await?;
                    total = (total.0 + reads, total.1 + conns);
                }
                Ok(total)
            }
        }
    }
}

/// The load generator's connection, as the runner writes: one Redis or a cluster.
enum Writer {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Writer {
    async fn run<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        Ok(match self {
            Self::Single(conn) => cmd.query_async(conn).await?,
            Self::Cluster(conn) => cmd.query_async(conn).await?,
        })
    }

    /// Sends every command, in one pipeline on one Redis; on a cluster, where the jobs' keys are
    /// in different slots, as concurrent single commands.
    async fn all(&mut self, cmds: Vec<redis::Cmd>) -> anyhow::Result<()> {
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd).ignore();
                }
                let () = pipe.query_async(conn).await?;
            }
            Self::Cluster(conn) => {
                let sends = cmds.into_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<redis::Value>(&mut conn).await }
                });
                for result in futures_util::future::join_all(sends).await {
                    result?;
                }
            }
        }
        Ok(())
    }
}

/// The buildlogs server as a separate process, so its memory and CPU are its own.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(
        bin: &PathBuf,
        redis_url: &str,
        public_pem: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis_url)
            .env("CLERK_JWT_KEY", public_pem)
            .env("MAX_STREAMS_PER_USER", "100000")
            .env("MAX_STREAMS", "100000")
            .env("RUST_LOG", "warn")
            .env_remove("CLERK_PUBLISHABLE_KEY")
            .env_remove("CLERK_JWKS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("server did not come up")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system), in clock ticks (100 per second).
    fn cpu_ticks(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1;
                let fields: Vec<&str> = after.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time this process used so far, in clock ticks (100 per second).
fn own_cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// What one viewer saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    lines: u64,
    out_of_order: u64,
    done: bool,
}

/// Follows one stream until `done` or `stop` over a raw socket (a load generator that costs
/// far less CPU than an HTTP client library, leaving the cores to the server), recording latency
/// from the append time in each line's text (`seq=<n> t=<nanos>`) and checking that sequence
/// numbers arrive 0, 1, 2, …
async fn view(
    addr: std::net::SocketAddr,
    path: String,
    token: String,
    opened: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut seen = Seen::default();
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        eprintln!("connect failed");
        return seen;
    };
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return seen;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    let mut head_done = false;
    let mut next_seq = 0u64;
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => break,
            n = tcp.read(&mut chunk) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        let received = now_nanos();
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = find(&buf, b"\r\n\r\n") else {
                continue;
            };
            if !buf.starts_with(b"HTTP/1.1 200") {
                eprintln!(
                    "stream refused: {}",
                    String::from_utf8_lossy(&buf[..end.min(40)])
                );
                return seen;
            }
            opened.fetch_add(1, Ordering::Relaxed);
            buf.drain(..end + 4);
            head_done = true;
        }
        // Only whole frames: keep what follows the last blank line for the next read.
        let Some(last) = rfind(&buf, b"\n\n") else {
            continue;
        };
        let frames = &buf[..last + 2];
        let mut at = 0;
        while let Some(pos) = find(&frames[at..], b"seq=") {
            let rest = &frames[at + pos + 4..];
            let (seq, used) = number(rest);
            let t_at = find(&rest[used..], b"t=")
                .map(|p| used + p + 2)
                .unwrap_or(used);
            let (t, _) = number(&rest[t_at..]);
            if seq != next_seq {
                seen.out_of_order += 1;
            }
            next_seq = seq + 1;
            seen.lines += 1;
            seen.latencies_us
                .push((received.saturating_sub(t) / 1000).min(u32::MAX as u64) as u32);
            at += pos + 4 + t_at;
        }
        if find(frames, b"event: done").is_some() {
            seen.done = true;
            return seen;
        }
        buf.drain(..last + 2);
    }
    seen
}

/// What all viewers of a live run saw, together.
struct Tally {
    /// Every line's append-to-receipt latency, sorted.
    latencies: Vec<u32>,
    /// Viewers that got every one of `total` lines, in order, then `done`.
    complete: usize,
    /// Lines received, over all viewers.
    delivered: u64,
}

impl Tally {
    fn of(results: &[Seen], total: u64) -> Self {
        let mut latencies: Vec<u32> = results
            .iter()
            .flat_map(|s| s.latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        Self {
            latencies,
            complete: results
                .iter()
                .filter(|s| s.done && s.lines == total && s.out_of_order == 0)
                .count(),
            delivered: results.iter().map(|s| s.lines).sum(),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The decimal number at the start of `bytes`, and how many bytes it took.
fn number(bytes: &[u8]) -> (u64, usize) {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let value = bytes[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (value, digits)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

struct Row {
    scenario: String,
    mode: String,
    load: String,
    p50_ms: f64,
    p99_ms: f64,
    delivered_per_s: f64,
    complete: String,
    rss_mb: f64,
    per_stream_kb: f64,
    reads_per_line: f64,
    redis_conns: u64,
    extra: String,
}

/// An `XADD` with the runner's four fields; `trim` adds the runner's `MAXLEN ~ 50000`.
fn xadd(job: &str, text: String, trim: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("job:{job}:logs"));
    if trim {
        cmd.arg("MAXLEN").arg("~").arg(50_000);
    }
    cmd.arg("*")
        .arg("ts")
        .arg("2026-11-24T03:05:57.123456+00:00")
        .arg("source")
        .arg("stdout")
        .arg("text")
        .arg(text)
        .arg("phase")
        .arg("build");
    cmd
}

/// Appends line `seq` of `job`, stamped with the time it is sent.
async fn append(conn: &mut Writer, job: &str, seq: u64) -> anyhow::Result<()> {
    let _: String = conn
        .run(&xadd(job, format!("seq={seq} t={}", now_nanos()), true))
        .await?;
    Ok(())
}

async fn create_job(conn: &mut Writer, job: &str, status: &str) -> anyhow::Result<()> {
    let _: i64 = conn
        .run(
            redis::cmd("HSET")
                .arg(format!("job:{job}"))
                .arg("user_id")
                .arg(USER)
                .arg("status")
                .arg(status),
        )
        .await?;
    Ok(())
}

async fn finish_job(conn: &mut Writer, job: &str) -> anyhow::Result<()> {
    create_job(conn, job, "ready").await?;
    let _: i64 = conn
        .run(
            redis::cmd("PUBLISH")
                .arg(format!("job:{job}:events"))
                .arg(format!(
                    r#"{{"job_id":"{job}","status":"ready","message":"","timestamp":""}}"#
                )),
        )
        .await?;
    Ok(())
}

/// Opens `streams` viewers of `jobs` (round robin), a few hundred connects at a time.
async fn open_viewers(
    base: &str,
    jobs: &[String],
    streams: usize,
    token: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> (Vec<tokio::task::JoinHandle<Seen>>, Arc<AtomicU64>) {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let opened = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(streams);
    for i in 0..streams {
        let path = format!("/api/jobs/{}/logs/stream", jobs[i % jobs.len()]);
        handles.push(tokio::spawn(view(
            addr,
            path,
            token.to_owned(),
            opened.clone(),
            stop.clone(),
        )));
        if i % 200 == 199 {
            while opened.load(Ordering::Relaxed) < (i as u64 + 1) * 9 / 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < streams as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (handles, opened)
}

/// Live scenario: `jobs` jobs, `per_job` viewers each, `rate` lines/s per job for `secs`.
#[allow(clippy::too_many_arguments)]
async fn live(
    name: &str,
    args: &Args,
    bin: &PathBuf,
    keys: &(String, Signer),
    mode: &str,
    jobs_n: usize,
    per_job: usize,
    rate: u64,
    with_history: bool,
    backend: &str,
) -> anyhow::Result<Row> {
    let redis = Backend::start(backend).await?;
    let server = Server::start(
        bin,
        &redis.url(),
        &keys.0,
        &[("LIVE_MODE", mode.to_owned())],
    )
    .await?;
    let (token, _) = keys.1.session_token(USER, Duration::from_secs(3600));
    let mut conn = redis.writer().await?;
    let jobs: Vec<String> = (0..jobs_n).map(|i| format!("bench-{i}")).collect();
    for job in &jobs {
        create_job(&mut conn, job, "code").await?;
    }
    // A job with history for the side-by-side history requests.
    create_job(&mut conn, "history", "ready").await?;
    if with_history {
        for seq in 0..5_000 {
            append(&mut conn, "history", seq).await?;
        }
    }
    let rss_before = server.rss_kb();
    let stop = tokio_util::sync::CancellationToken::new();
    let streams = jobs_n * per_job;
    let (viewers, opened) = open_viewers(&server.base, &jobs, streams, &token, &stop).await;
    let opened = opened.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The history requests alongside read Redis too: what one costs is measured here, with no
    // lines flowing (against the live path's own reads at rest over a second just before), and
    // subtracted from the reads per line below.
    let (history_base, history_reads_per_request) = if with_history {
        let (rest_start, _) = redis.stats().await?;
        let rest = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rest_end, _) = redis.stats().await?;
        let rest_rate = (rest_end - rest_start) as f64 / rest.elapsed().as_secs_f64();
        let measured = Instant::now();
        let base = history_latency(&server.base, &token, Duration::from_secs(3), 4).await;
        let (after, _) = redis.stats().await?;
        let reads = (after - rest_end) as f64 - rest_rate * measured.elapsed().as_secs_f64();
        (Some(base), (reads / base.3 as f64).max(0.0))
    } else {
        (None, 0.0)
    };
    let (reads_before, _) = redis.stats().await?;
    let history_during = if with_history {
        let base = server.base.clone();
        let token = token.clone();
        let secs = args.secs;
        Some(tokio::spawn(async move {
            history_latency(
                &base,
                &token,
                Duration::from_secs(secs.saturating_sub(2).max(1)),
                4,
            )
            .await
        }))
    } else {
        None
    };

    // Writers: every job gets `rate` lines a second, and the jobs' lines are spread evenly over
    // each 1/rate tick (job i writes i/jobs of a tick after job 0), not sent as one burst. Each
    // millisecond, the lines due by then go in one pipeline.
    let total_lines = rate * args.secs;
    let due_lines = total_lines * jobs_n as u64;
    let line_nanos = 1_000_000_000f64 / (rate as f64 * jobs_n as f64);
    let cpu_before = (server.cpu_ticks(), own_cpu_ticks());
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    let mut peak_rss = 0;
    let mut peak_conns = 0;
    let mut next_line = 0u64;
    let mut next_sample = Duration::ZERO;
    while next_line < due_lines {
        interval.tick().await;
        let elapsed = started.elapsed();
        let t = now_nanos();
        let mut lines = Vec::new();
        while next_line < due_lines && next_line as f64 * line_nanos <= elapsed.as_nanos() as f64 {
            let (seq, job) = (next_line / jobs_n as u64, next_line as usize % jobs_n);
            lines.push(xadd(&jobs[job], format!("seq={seq} t={t}"), true));
            next_line += 1;
        }
        if !lines.is_empty() {
            conn.all(lines).await?;
        }
        if elapsed >= next_sample {
            next_sample += Duration::from_secs(1);
            peak_rss = peak_rss.max(server.rss_kb());
            peak_conns = peak_conns.max(redis.stats().await?.1);
        }
    }
    let write_secs = started.elapsed().as_secs_f64();
    let server_cpu = (server.cpu_ticks() - cpu_before.0) as f64 / write_secs;
    let bench_cpu = (own_cpu_ticks() - cpu_before.1) as f64 / write_secs;
    for job in &jobs {
        finish_job(&mut conn, job).await?;
    }
    let (reads_after, conns_after) = redis.stats().await?;
    let history_during = match history_during {
        Some(h) => Some(h.await?),
        None => None,
    };
    // Let viewers drain to `done` (bounded), then stop the stragglers.
    let drain = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(viewers),
    )
    .await;
    let results: Vec<Seen> = match drain {
        Ok(results) => results.into_iter().filter_map(Result::ok).collect(),
        Err(_) => {
            stop.cancel();
            Vec::new()
        }
    };
    let Tally {
        latencies,
        complete,
        delivered,
    } = Tally::of(&results, total_lines);
    let lines_written = total_lines * jobs_n as u64;
    let mut extra =
        format!("CPU: server {server_cpu:.0}%, load generator {bench_cpu:.0}% (of one core)");
    let all_reads = (reads_after - reads_before) as f64;
    let mut live_reads = all_reads;
    if let (Some(base), Some(during)) = (history_base, history_during) {
        let history_reads = during.3 as f64 * history_reads_per_request;
        live_reads = (all_reads - history_reads).max(0.0);
        extra += &format!(
            "; history p50/p99 {:.2}/{:.2} ms idle → {:.2}/{:.2} ms under load; reads/line \
             without subtracting the {} history requests' ({history_reads_per_request:.2} each): \
             {:.2}",
            base.0,
            base.1,
            during.0,
            during.1,
            during.3,
            all_reads / lines_written as f64,
        );
    }
    Ok(Row {
        scenario: name.to_owned(),
        mode: match backend {
            "single" => mode.to_owned(),
            other => format!("{mode} ({other})"),
        },
        load: format!(
            "{jobs_n} job(s) × {per_job} viewers, {rate} lines/s/job, {}s ({opened} streams open)",
            args.secs
        ),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        delivered_per_s: delivered as f64 / write_secs,
        complete: format!("{complete}/{streams}"),
        rss_mb: peak_rss as f64 / 1024.0,
        per_stream_kb: (peak_rss.saturating_sub(rss_before)) as f64 / streams as f64,
        reads_per_line: live_reads / lines_written as f64,
        redis_conns: peak_conns.max(conns_after),
        extra,
    })
}

/// p50/p99 (ms), requests/s and requests made, of history pages from random points of the
/// `history` job.
async fn history_latency(
    base: &str,
    token: &str,
    dur: Duration,
    clients: usize,
) -> (f64, f64, f64, u64) {
    let http = reqwest::Client::new();
    let first: serde_json::Value = http
        .get(format!("{base}/api/jobs/history/logs?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest: buildlogs::ids::StreamId = first["oldest_id"]
        .as_str()
        .unwrap_or("0-0")
        .parse()
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let url = format!("{base}/api/jobs/history/logs");
        let token = token.to_owned();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let end = Instant::now() + dur;
            let mut before = newest;
            let mut i = c as u64;
            while Instant::now() < end {
                let t = Instant::now();
                let resp = http
                    .get(&url)
                    .bearer_auth(&token)
                    .query(&[("limit", "100"), ("before_id", &before.to_string())])
                    .send()
                    .await
                    .unwrap();
                // Scan rather than parse: the load generator should not eat the server's CPU.
                let body = resp.bytes().await.unwrap();
                lat.push(t.elapsed().as_micros() as u32);
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
                let oldest = find(&body, b"\"oldest_id\":\"").map(|at| {
                    let rest = &body[at + 13..];
                    let (ms, used) = number(rest);
                    let (seq, _) = number(&rest[used + 1..]);
                    buildlogs::ids::StreamId::new(ms, seq)
                });
                let has_more = find(&body, b"\"has_more\":true").is_some();
                before = match oldest {
                    Some(id) if has_more && i % 50 != 0 => id,
                    _ => newest,
                };
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        count.load(Ordering::Relaxed),
    )
}

async fn idle(args: &Args, bin: &PathBuf, keys: &(String, Signer)) -> anyhow::Result<Row> {
    let redis = start_redis();
    let server = Server::start(
        bin,
        &redis.url(),
        &keys.0,
        &[("HEARTBEAT_SECS", "5".to_owned())],
    )
    .await?;
    let (token, _) = keys.1.session_token(USER, Duration::from_secs(3600));
    let mut conn = Writer::Single(redis_conn(&redis).await?);
    let jobs: Vec<String> = (0..100).map(|i| format!("idle-{i}")).collect();
    for job in &jobs {
        create_job(&mut conn, job, "code").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kb();
    let stop = tokio_util::sync::CancellationToken::new();
    let (viewers, opened) =
        open_viewers(&server.base, &jobs, args.idle_streams, &token, &stop).await;
    let opened = opened.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = server.cpu_ticks();
    let window = Duration::from_secs(args.secs.clamp(5, 30));
    tokio::time::sleep(window).await;
    let cpu = (server.cpu_ticks() - cpu_before) as f64 / 100.0 / window.as_secs_f64();
    let rss = server.rss_kb();
    let (_, conns) = redis_stats(&redis).await?;
    // SIGTERM with every stream open: how long until the process has exited.
    let mut server = server;
    let term = Instant::now();
    Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()?;
    let exited = loop {
        if server.child.try_wait()?.is_some() {
            break term.elapsed();
        }
        if term.elapsed() > Duration::from_secs(30) {
            bail!("server still running 30 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.cancel();
    for v in viewers {
        let _ = v.await;
    }
    Ok(Row {
        scenario: "idle".into(),
        mode: "fanout".into(),
        load: format!(
            "{opened} streams on 100 jobs, heartbeats every 5 s, {}s",
            window.as_secs()
        ),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        delivered_per_s: 0.0,
        complete: format!("{opened}/{}", args.idle_streams),
        rss_mb: rss as f64 / 1024.0,
        per_stream_kb: (rss.saturating_sub(rss_before)) as f64 / opened.max(1) as f64,
        reads_per_line: f64::NAN,
        redis_conns: conns,
        extra: format!(
            "server CPU {:.1}% of one core; SIGTERM to exit with all streams open: {:.2} s",
            cpu * 100.0,
            exited.as_secs_f64()
        ),
    })
}

async fn history(bin: &PathBuf, keys: &(String, Signer), secs: u64) -> anyhow::Result<Row> {
    let redis = start_redis();
    let server = Server::start(bin, &redis.url(), &keys.0, &[]).await?;
    let (token, _) = keys.1.session_token(USER, Duration::from_secs(3600));
    let mut writer = Writer::Single(redis_conn(&redis).await?);
    create_job(&mut writer, "history", "ready").await?;
    let mut conn = redis_conn(&redis).await?;
    for chunk in 0..100 {
        let mut pipe = redis::pipe();
        for i in 0..1000u64 {
            let text = format!(
                "line {} of the build output, about as long as a typical one",
                chunk * 1000 + i
            );
            pipe.add_command(xadd("history", text, false)).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    let dur = Duration::from_secs(secs.clamp(5, 30));
    let (p50, p99, rps, _) = history_latency(&server.base, &token, dur, 64).await;
    let (bare50, bare99, bare_rps) = bare_redis_history(&redis, dur, 64).await?;
    Ok(Row {
        scenario: "history".into(),
        mode: "-".into(),
        load: format!(
            "pages of 100 from 100,000 lines, 64 clients, {}s",
            dur.as_secs()
        ),
        p50_ms: p50,
        p99_ms: p99,
        delivered_per_s: rps,
        complete: "-".into(),
        rss_mb: server.rss_kb() as f64 / 1024.0,
        per_stream_kb: f64::NAN,
        reads_per_line: f64::NAN,
        redis_conns: redis_stats(&redis).await?.1,
        extra: format!(
            "req/s {rps:.0} vs bare Redis {bare_rps:.0} ({:.2}×); bare p50/p99 {bare50:.2}/{bare99:.2} ms",
            bare_rps / rps
        ),
    })
}

/// The same reads as a history request (job lookup + `XREVRANGE … COUNT 101`) straight from a
/// Redis client with a 16-connection pool, no HTTP, no auth, no JSON.
async fn bare_redis_history(
    redis: &RedisServer,
    dur: Duration,
    clients: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut conns = Vec::new();
    for _ in 0..16 {
        conns.push(redis_conn(redis).await?);
    }
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut conn = conns[c % conns.len()].clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let end = Instant::now() + dur;
            let mut before = "+".to_owned();
            let mut i = c as u64;
            while Instant::now() < end {
                let t = Instant::now();
                let _: (Option<String>, Option<String>) = redis::cmd("HMGET")
                    .arg("job:history")
                    .arg("user_id")
                    .arg("status")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                    .arg("job:history:logs")
                    .arg(&before)
                    .arg("-")
                    .arg("COUNT")
                    .arg(101)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                lat.push(t.elapsed().as_micros() as u32);
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
                before = match page.get(99) {
                    Some((id, _)) if page.len() == 101 && i % 50 != 0 => format!("({id}"),
                    _ => "+".to_owned(),
                };
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    Ok((
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
    ))
}

/// The floor: append-to-receipt latency of a bare `XREAD BLOCK` client, no buildlogs in between.
async fn floor(args: &Args) -> anyhow::Result<Row> {
    let redis = start_redis();
    let mut writer = Writer::Single(redis_conn(&redis).await?);
    let mut reader = redis_conn(&redis).await?;
    create_job(&mut writer, "floor", "code").await?;
    let total = 50 * args.secs;
    let read = tokio::spawn(async move {
        let mut last = "$".to_owned();
        let mut lat = Vec::new();
        while (lat.len() as u64) < total {
            let reply: redis::Value = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg("job:floor:logs")
                .arg(&last)
                .query_async(&mut reader)
                .await
                .unwrap();
            let received = now_nanos();
            let text = format!("{reply:?}");
            for part in text.split("seq=").skip(1) {
                let t: u64 = part
                    .split(" t=")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(received);
                lat.push(((received - t) / 1000) as u32);
            }
            if let Some(id) = text.rsplit("bulk-string('\"").find_map(|p| {
                p.split('"').next().filter(|s| {
                    s.contains('-') && s.chars().all(|c| c.is_ascii_digit() || c == '-')
                })
            }) {
                last = id.to_owned();
            }
        }
        lat
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..total {
        interval.tick().await;
        append(&mut writer, "floor", seq).await?;
    }
    let mut lat = tokio::time::timeout(Duration::from_secs(10), read).await??;
    lat.sort_unstable();
    Ok(Row {
        scenario: "floor".into(),
        mode: "bare XREAD".into(),
        load: format!("1 reader, 50 lines/s, {}s", args.secs),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        delivered_per_s: f64::NAN,
        complete: format!("{}/{total}", lat.len()),
        rss_mb: f64::NAN,
        per_stream_kb: f64::NAN,
        reads_per_line: f64::NAN,
        redis_conns: 2,
        extra: String::new(),
    })
}

/// The machine's floor for fan-out: no HTTP stack, no Redis, no auth. A bare tokio server on a
/// runtime of its own (two workers, as the service has) accepts the viewers, answers each with
/// a chunked `200`, and sends every line to all of them through a broadcast channel, one task
/// and one write per viewer per line. The same load generator reads them. Each line is stamped
/// when it enters the channel, so unlike the service rows no Redis round trip is included.
async fn send_floor(args: &Args) -> anyhow::Result<Row> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let viewers = args.viewers;
    let rate = args.rate;
    let total = rate * args.secs;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = std::thread::spawn(move || -> anyhow::Result<f64> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (tx, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(64);
            let mut tasks = Vec::with_capacity(viewers);
            for _ in 0..viewers {
                let (mut sock, _) = listener.accept().await?;
                sock.set_nodelay(true)?;
                let mut rx = tx.subscribe();
                tasks.push(tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = sock.read(&mut head).await;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    if sock.write_all(ok).await.is_err() {
                        return;
                    }
                    while let Ok(frame) = rx.recv().await {
                        if sock.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            let chunk = |body: String| {
                bytes::Bytes::from(format!("{:x}\r\n{body}\r\n", body.len()))
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            for seq in 0..total {
                interval.tick().await;
                let body = format!("event: log\ndata: seq={seq} t={}\n\n", now_nanos());
                let _ = tx.send(chunk(body));
            }
            let secs = started.elapsed().as_secs_f64();
            let _ = tx.send(chunk("event: done\ndata: {}\n\n".into()));
            // Closing the channel ends each task once it has sent everything.
            drop(tx);
            for task in tasks {
                let _ = task.await;
            }
            Ok(secs)
        })
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let jobs = vec!["floor".to_owned()];
    let (handles, opened) = open_viewers(&base, &jobs, viewers, "-", &stop).await;
    let opened = opened.load(Ordering::Relaxed);
    let cpu_before = own_cpu_ticks();
    let results: Vec<Seen> = futures_util::future::join_all(handles)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let secs = server
        .join()
        .map_err(|_| anyhow::anyhow!("floor server panicked"))??;
    let cpu = (own_cpu_ticks() - cpu_before) as f64 / secs;
    let Tally {
        latencies,
        complete,
        delivered,
    } = Tally::of(&results, total);
    Ok(Row {
        scenario: "fanout".into(),
        mode: "floor: bare sockets".into(),
        load: format!(
            "1 job × {viewers} viewers, {rate} lines/s, {}s ({opened} streams open)",
            args.secs
        ),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        delivered_per_s: delivered as f64 / secs,
        complete: format!("{complete}/{viewers}"),
        rss_mb: f64::NAN,
        per_stream_kb: f64::NAN,
        reads_per_line: f64::NAN,
        redis_conns: 0,
        extra: format!("CPU: floor server and load generator together {cpu:.0}% (of one core)"),
    })
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `buildlogs-bench serve …` is the service itself: the server process of the scenarios.
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let cli = buildlogs::config::Cli::parse_from(std::env::args());
        let buildlogs::config::Command::Serve(config) = cli.command else {
            unreachable!("`serve` parses as the serve command")
        };
        buildlogs::telemetry::init_tracing();
        return buildlogs::app::run(*config, buildlogs::app::shutdown_signal()).await;
    }
    let args = Args::parse();
    let own = std::env::current_exe()?;
    let bin = args.server_bin.clone().unwrap_or_else(|| own.clone());
    anyhow::ensure!(bin.exists(), "server binary {} not found", bin.display());
    let (private, public) = generate_rsa_pem()?;
    let keys = (public, Signer::from_pem(&private, None)?);
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for scenario in &args.scenarios {
        match scenario.as_str() {
            "fanout" | "many" => {
                for (backend, mode) in args
                    .backends
                    .iter()
                    .flat_map(|b| args.modes.iter().map(move |m| (b.as_str(), m)))
                {
                    eprintln!("running {scenario} ({mode}, {backend})…");
                    let bin = if mode == "naive" { &own } else { &bin };
                    let row = if scenario == "fanout" {
                        live(
                            "fanout",
                            &args,
                            bin,
                            &keys,
                            mode,
                            1,
                            args.viewers,
                            args.rate,
                            false,
                            backend,
                        )
                        .await?
                    } else {
                        live(
                            "many", &args, bin, &keys, mode, args.jobs, 2, 10, true, backend,
                        )
                        .await?
                    };
                    rows.push(row);
                }
            }
            "floor" => {
                eprintln!("running floor…");
                rows.push(floor(&args).await?);
            }
            "sendfloor" => {
                eprintln!("running sendfloor…");
                rows.push(send_floor(&args).await?);
            }
            "idle" => {
                eprintln!("running idle…");
                rows.push(idle(&args, &bin, &keys).await?);
            }
            "history" => {
                eprintln!("running history…");
                rows.push(history(&bin, &keys, args.secs).await?);
            }
            "download" => {
                eprintln!("running download…");
                rows.push(readlog::download(&bin, &keys, args.secs).await?);
            }
            "search" => {
                eprintln!("running search…");
                rows.push(readlog::search(&bin, &keys, args.secs).await?);
            }
            "soak" => {
                eprintln!("running soak…");
                let seed = args.seed.unwrap_or_else(|| now_nanos() % 1_000_000_007);
                let plan = soak::Soak {
                    viewers: args.soak_viewers,
                    jobs: args.soak_jobs,
                    secs: args.secs,
                    seed,
                };
                // A failed soak still prints the table with its row, then fails.
                let (row, failed) = soak::soak(&bin, &keys.0, &private, plan).await?;
                rows.push(row);
                failures.extend(failed);
            }
            other => bail!("unknown scenario {other}"),
        }
    }
    println!(
        "| scenario | mode | load | p50 ms | p99 ms | delivered/s | complete | server RSS MB | KB/stream | Redis reads/line | Redis conns | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.mode,
            r.load,
            fmt(r.p50_ms, 2),
            fmt(r.p99_ms, 2),
            fmt(r.delivered_per_s, 0),
            r.complete,
            fmt(r.rss_mb, 1),
            fmt(r.per_stream_kb, 1),
            fmt(r.reads_per_line, 2),
            r.redis_conns,
            r.extra
        );
    }
    if let Some(err) = failures.pop() {
        return Err(err);
    }
    Ok(())
}
