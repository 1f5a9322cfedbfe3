//! Configuration: the command line and the environment variables behind every `serve` flag.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "buildlogs",
    version,
    about = "Live and historical build logs for the jobs' owners."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    #[command(
        after_help = "Logging: RUST_LOG sets the log filter (default `info`; e.g. `buildlogs=debug,info`)."
    )]
    Serve(Box<Config>),
    /// Print the OpenAPI document (the same as GET /openapi.json) and exit.
    Openapi,
}

/// How live lines reach viewers, in benchmark builds (`bench-naive` feature).
#[cfg(feature = "bench-naive")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LiveMode {
    /// One shared reader per job per instance fans lines out to every viewer (the product).
    #[default]
    Fanout,
    /// Every viewer runs its own blocking read and status checks (the naive design).
    Naive,
}

/// Everything `buildlogs serve` can be told. Every flag has an environment variable.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Redis URL (`redis://host:port/db`). Unset: the embedded in-process store (one instance only).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// `REDIS_URL` names a Redis Cluster's seed nodes (`redis://host:port,host:port/`). Implied
    /// by a `redis+cluster://` URL.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Pooled Redis connections for short commands (history, job lookups). Blocking reads use
    /// their own connections and never take from this pool.
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 16)]
    pub redis_pool_size: usize,

    /// Dedicated connections for live reads; each watches many job streams in one `XREAD BLOCK`.
    #[arg(long, env = "REDIS_LIVE_READERS", default_value_t = 2)]
    pub redis_live_readers: usize,

    /// Clerk publishable key (`pk_test_…`/`pk_live_…`): the JWKS URL and issuer are derived from it.
    #[arg(long, env = "CLERK_PUBLISHABLE_KEY")]
    pub clerk_publishable_key: Option<String>,

    /// PEM public key for networkless token verification (`\n` escapes are accepted).
    #[arg(long, env = "CLERK_JWT_KEY")]
    pub clerk_jwt_key: Option<String>,

    /// JWKS URL (HTTPS, or HTTP on loopback). Overrides the one derived from the publishable key.
    #[arg(long, env = "CLERK_JWKS_URL")]
    pub clerk_jwks_url: Option<String>,

    /// Required `iss` of tokens. Overrides the one derived from the publishable key.
    #[arg(long, env = "CLERK_ISSUER")]
    pub clerk_issuer: Option<String>,

    /// Comma-separated origins; when set, a token's `azp` must be present and one of them.
    #[arg(long, env = "CLERK_AUTHORIZED_PARTIES", value_delimiter = ',')]
    pub clerk_authorized_parties: Vec<String>,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,

    /// Seconds between heartbeats on a quiet stream.
    #[arg(long, env = "HEARTBEAT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,

    /// Open streams one user may hold on this instance; past it, 429.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 50)]
    pub max_streams_per_user: usize,

    /// Open streams this instance holds in total; past it, 429.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 20_000)]
    pub max_streams: usize,

    /// Seconds between status checks of followed jobs (the safety net under Pub/Sub hints).
    #[arg(long, env = "STATUS_POLL_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub status_poll_secs: u64,

    /// A viewer more than this many lines behind the live head is disconnected (it resumes with
    /// `Last-Event-ID`); a viewer behind by less catches up from the store.
    #[arg(long, env = "VIEWER_MAX_LAG", default_value_t = 20_000)]
    pub viewer_max_lag: usize,

    /// Also serve `/metrics`, `/healthz` and `/readyz` on this address (a private port, as
    /// Prometheus deployments expect); `/metrics` then leaves the API listener. Unset: all on
    /// `LISTEN_ADDR`.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// A connection with no request in flight for this many seconds is closed (HTTP/2: GOAWAY),
    /// and so is one whose request head takes longer.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,

    /// Comma-separated origins (`scheme://host[:port]`, matched byte for byte) allowed by CORS on
    /// `/api` (for browsers on another origin). Unset: no CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// How live lines reach viewers: `fanout` (shared per-job readers, the product) or `naive`
    /// (every viewer reads for itself). Only in builds with the `bench-naive` feature.
    #[cfg(feature = "bench-naive")]
    #[arg(long, env = "LIVE_MODE", value_enum, default_value_t = LiveMode::Fanout)]
    pub live_mode: LiveMode,

    /// A stream whose client reads nothing for this many seconds, while there is data to send,
    /// is ended (the client resumes with `Last-Event-ID`).
    #[arg(long, env = "STREAM_STALL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stream_stall_secs: u64,

    /// Kernel send buffer (`SO_SNDBUF`, bytes) of a connection carrying an HTTP/1 event stream,
    /// once the stream is written directly: bounds what a stalled viewer pins in the kernel
    /// until its stall cut (Linux reserves about twice the value). 0: the kernel's autotuning,
    /// which lets a stalled viewer's buffer grow to `net.ipv4.tcp_wmem`'s maximum (4 MB by
    /// default).
    #[arg(long, env = "STREAM_SEND_BUFFER", default_value_t = 65_536)]
    pub stream_send_buffer: usize,

    /// Local try-out: throwaway signing key, a printed demo token, a demo job producing logs.
    /// Refuses to run with a Clerk key configured.
    #[arg(long)]
    pub dev: bool,

    /// With --dev: seconds between new demo jobs.
    #[arg(long, env = "DEV_JOB_EVERY_SECS", default_value_t = 60)]
    pub dev_job_every_secs: u64,

    /// With --dev: seconds each demo job writes output before turning `ready`.
    #[arg(long, env = "DEV_DEMO_SECS", default_value_t = 50)]
    pub dev_demo_secs: u64,
}

impl Default for Config {
    /// The same defaults as the command line, without reading the environment.
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:8080".parse().expect("valid literal"),
            redis_url: None,
            redis_cluster: false,
            redis_pool_size: 16,
            redis_live_readers: 2,
            clerk_publishable_key: None,
            clerk_jwt_key: None,
            clerk_jwks_url: None,
            clerk_issuer: None,
            clerk_authorized_parties: Vec::new(),
            jwt_leeway_secs: 5,
            heartbeat_secs: 20,
            max_streams_per_user: 50,
            max_streams: 20_000,
            status_poll_secs: 2,
            viewer_max_lag: 20_000,
            cors_allowed_origins: Vec::new(),
            #[cfg(feature = "bench-naive")]
            live_mode: LiveMode::Fanout,
            stream_stall_secs: 30,
            stream_send_buffer: 65_536,
            metrics_addr: None,
            idle_timeout_secs: 30,
            dev: false,
            dev_job_every_secs: 60,
            dev_demo_secs: 50,
        }
    }
}

impl Config {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    pub fn has_clerk_key(&self) -> bool {
        self.clerk_publishable_key.is_some()
            || self.clerk_jwt_key.is_some()
            || self.clerk_jwks_url.is_some()
    }
}
