//! Shared test harness: a real `redis-server` per test on a free port (from the workspace's
//! test-support crate, shared with the benchmark), real RS256 keys and tokens, the real app
//! (in-process or on a port-0 listener), and a small SSE reader.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use buildlogs::{
    App, AppState, Config,
    dev::{Signer, generate_rsa_pem},
    ids::JobId,
    metrics::Metrics,
    runner_format::LogWriter,
    store::{LogStore, memory::MemoryStore},
};
use futures_util::{StreamExt, stream::BoxStream};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use buildlogs_test_support::{RedisCluster, RedisServer};

/// Keys generated once per test binary: the trusted one and a stranger's.
pub struct Keys {
    pub private_pem: String,
    pub public_pem: String,
    pub signer: Signer,
    pub other_signer: Signer,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (private_pem, public_pem) = generate_rsa_pem().unwrap();
        let (other_private, _) = generate_rsa_pem().unwrap();
        Keys {
            signer: Signer::from_pem(&private_pem, Some("test-key-1")).unwrap(),
            other_signer: Signer::from_pem(&other_private, Some("test-key-1")).unwrap(),
            private_pem,
            public_pem,
        }
    })
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid session token for `user`, good for ten minutes.
pub fn token(user: &str) -> String {
    keys()
        .signer
        .sign(&json!({"sub": user, "iat": now(), "nbf": now() - 1, "exp": now() + 600}))
}

pub fn token_with(claims: Value) -> String {
    keys().signer.sign(&claims)
}

pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// An unsigned token (`alg: none`).
pub fn none_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// HS256 signed with the public key as the HMAC secret (the classic key-confusion attack).
pub fn hs256_with_public_key(claims: &Value) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(keys().public_pem.as_bytes());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub fn unique_job() -> JobId {
    JobId::parse(&format!("job-{:016x}", rand::thread_rng().r#gen::<u64>())).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Memory,
    /// A local Redis Cluster, 3 masters and 3 replicas.
    Cluster,
}

/// The test's configuration: the test key, no CORS, defaults otherwise.
pub fn test_config() -> Config {
    Config {
        clerk_jwt_key: Some(keys().public_pem.clone()),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

/// The real app over a fresh store, served on a port-0 listener.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    /// The private listener's base URL, when `METRICS_ADDR` is configured.
    pub metrics_base: Option<String>,
    pub state: Arc<AppState>,
    pub store: Arc<dyn LogStore>,
    pub memory: Option<MemoryStore>,
    pub writer: LogWriter,
    pub redis: Option<RedisServer>,
    /// The local cluster, for `Backend::Cluster`.
    pub cluster: Option<Arc<RedisCluster>>,
    pub http: reqwest::Client,
    client: poem::test::TestClient<poem::endpoint::BoxEndpoint<'static, poem::Response>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Redis, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let cluster = match backend {
        Backend::Cluster => Some(RedisCluster::start_async().await.expect("a local cluster")),
        _ => None,
    };
    let mut config = test_config();
    config.redis_url = redis
        .as_ref()
        .map(RedisServer::url)
        .or_else(|| cluster.as_ref().map(|c| c.cluster_url()));
    tweak(&mut config);
    let mut app = spawn_with_config(config, redis).await;
    app.cluster = cluster;
    app
}

pub async fn spawn_with_config(config: Config, redis: Option<RedisServer>) -> TestApp {
    let metrics = Arc::new(Metrics::new());
    let (store, memory): (Arc<dyn LogStore>, Option<MemoryStore>) = match &config.redis_url {
        Some(url) => (
            buildlogs::store::open_redis(
                url,
                config.redis_cluster,
                config.redis_pool_size,
                metrics.clone(),
            )
            .unwrap(),
            None,
        ),
        None => {
            let memory = MemoryStore::new();
            (Arc::new(memory.clone()), Some(memory))
        }
    };
    let config_metrics = config.metrics_addr.is_some();
    let app = App::with_store(config, store.clone(), metrics)
        .await
        .unwrap();
    let state = app.state().clone();
    let client_state = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = match config_metrics {
        true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        false => None,
    };
    let metrics_base = metrics
        .as_ref()
        .map(|l| format!("http://{}", l.local_addr().unwrap()));
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = buildlogs::app::Listeners {
        api: listener,
        metrics,
    };
    let server = tokio::spawn(app.serve(listeners, async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        metrics_base,
        writer: LogWriter::new(store.clone()),
        store,
        memory,
        state,
        redis,
        cluster: None,
        http: reqwest::Client::builder().build().unwrap(),
        client: poem::test::TestClient::new(poem::EndpointExt::boxed(
            App::from_state(client_state).endpoint(),
        )),
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// An in-process client of the same app (no socket).
    pub fn client(
        &self,
    ) -> &poem::test::TestClient<poem::endpoint::BoxEndpoint<'static, poem::Response>> {
        &self.client
    }

    /// A job owned by `user` with status `status`.
    pub async fn job(&self, user: &str, status: &str) -> JobId {
        let job = unique_job();
        self.writer.create_job(&job, user, status).await.unwrap();
        job
    }

    /// Appends `n` stdout lines `line 0`…, returning their ids.
    pub async fn lines(&self, job: &JobId, n: usize) -> Vec<String> {
        append_lines(&self.writer, job, n, "line ").await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` over HTTP with `user`'s session token as a Bearer header.
    pub async fn get_as(&self, user: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap()
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let base = self.metrics_base.as_deref().unwrap_or(&self.base);
        fetch_metric(&self.http, base, name).await
    }

    /// Waits (event-driven on the metrics endpoint, bounded) until a metric has `value`.
    pub async fn await_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let current = self.metric(name).await;
            if current == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed {current}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stream(&self, job: &JobId, token: &str, last_event_id: Option<&str>) -> SseClient {
        let mut req = self
            .http
            .get(self.url(&format!("/api/jobs/{job}/logs/stream")))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        SseClient::new(req.send().await.unwrap())
    }

    /// Stops the server as SIGTERM would, waiting for it to finish.
    pub async fn shutdown(&mut self) -> Duration {
        let started = std::time::Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Appends `n` stdout lines `{prefix}0`, `{prefix}1`, … through `writer`, returning their ids.
pub async fn append_lines(writer: &LogWriter, job: &JobId, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let text = format!("{prefix}{i}");
        let id = writer
            .append(
                job,
                buildlogs::runner_format::Source::Stdout,
                "build",
                &text,
            )
            .await
            .unwrap();
        ids.push(id.to_string());
    }
    ids
}

/// The ids of a history page's lines, in order.
pub fn page_ids(page: &Value) -> Vec<String> {
    page["lines"]
        .as_array()
        .expect("a history page has lines")
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A metric of the server at `base`, from its `/metrics`.
pub async fn fetch_metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, name)
}

/// The value of an unlabelled metric (or the sum over its labels) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let bare = key.split('{').next()?;
            (bare == name || key == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// One Server-Sent Event as a browser would see it (plus the `retry` field).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", self.data))
    }
}

/// How an event stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server ended the body properly.
    Clean,
    /// A transport error: a reset, or a body cut short.
    Cut(String),
}

/// Reads an SSE response incrementally.
pub struct SseClient {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    pub raw: String,
}

impl SseClient {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
            raw: String::new(),
        }
    }

    /// The next event, or `None` when the server ended the stream cleanly (a proper last
    /// chunk). A transport error (a reset, a body cut short) fails the test: use
    /// [`Self::next_or_end`] where a stream may be cut.
    pub async fn next(&mut self) -> Option<SseEvent> {
        match self.next_or_end().await {
            Ok(ev) => Some(ev),
            Err(End::Clean) => None,
            Err(End::Cut(err)) => panic!("the stream did not end cleanly: {err}"),
        }
    }

    /// The next event, or how the stream ended.
    pub async fn next_or_end(&mut self) -> Result<SseEvent, End> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    ..SseEvent::default()
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    let (field, value) = line
                        .split_once(':')
                        .map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                    match field {
                        "event" => ev.event = value.to_owned(),
                        "id" => ev.id = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        "retry" => ev.retry = value.parse().ok(),
                        _ => {}
                    }
                }
                ev.data = data.join("\n");
                return Ok(ev);
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
                    self.raw.push_str(&text);
                    self.buf.push_str(&text);
                }
                Some(Err(err)) => return Err(End::Cut(format!("{err:?}"))),
                None => return Err(End::Clean),
            }
        }
    }

    /// The next event within `secs` seconds; panics on timeout.
    pub async fn next_within(&mut self, secs: u64) -> Option<SseEvent> {
        tokio::time::timeout(Duration::from_secs(secs), self.next())
            .await
            .expect("no event in time")
    }

    /// The next event that is not a heartbeat.
    pub async fn next_non_heartbeat(&mut self) -> Option<SseEvent> {
        loop {
            let ev = self.next_within(10).await?;
            if ev.event != "heartbeat" {
                return Some(ev);
            }
        }
    }

    /// Reads `retry` and `start`, returning `start`.
    pub async fn start(&mut self) -> SseEvent {
        let retry = self.next_within(10).await.expect("retry");
        assert!(retry.retry.is_some(), "first thing is retry: {retry:?}");
        let start = self.next_within(10).await.expect("start");
        assert_eq!(start.event, "start");
        start
    }

    /// Log texts until `done` (returned with them), skipping heartbeats.
    pub async fn until_done(&mut self) -> (Vec<SseEvent>, Option<SseEvent>) {
        let mut logs = Vec::new();
        while let Some(ev) = self.next_non_heartbeat().await {
            match ev.event.as_str() {
                "log" => logs.push(ev),
                "done" => return (logs, Some(ev)),
                other => panic!("unexpected event {other}: {ev:?}"),
            }
        }
        (logs, None)
    }
}

/// A raw HTTP/1.1 stream request from a client with a tiny receive buffer that then reads
/// nothing: the server's writes to it soon block.
/// The head of a raw HTTP/1.1 `GET` of `job`'s live stream with `token` as a Bearer header,
/// for tests that speak to the socket themselves.
pub fn raw_stream_get(job: impl std::fmt::Display, token: &str) -> String {
    format!(
        "GET /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
}

pub async fn stalled_viewer(app: &TestApp, job: &str, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(app.addr).await.unwrap();
    tcp.write_all(raw_stream_get(job, token).as_bytes())
        .await
        .unwrap();
    tcp
}

/// Reads a raw response until the connection closes or a chunked body's last chunk.
pub async fn tcp_read_to_end(tcp: &mut tokio::net::TcpStream, out: &mut Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 65536];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // Chunked encoding ends with a zero-size chunk.
                if out.ends_with(b"\r\n0\r\n\r\n") {
                    return;
                }
            }
        }
    }
}

/// The body of a raw HTTP/1.1 chunked response (what arrived of it).
pub fn dechunk(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let (_, mut rest) = text.split_once("\r\n\r\n").expect("response head");
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// The test's own writer, straight to `redis` in the runner's format.
pub fn redis_writer(redis: &RedisServer) -> LogWriter {
    let metrics = Arc::new(Metrics::new());
    let store = buildlogs::store::redis::RedisStore::new(&redis.url(), 4, metrics).unwrap();
    LogWriter::new(Arc::new(store))
}

/// A `buildlogs serve` process of its own (so its memory and descriptors are its own), on a
/// free port, with the test key, over `redis` or the embedded store.
pub struct Instance {
    pub child: std::process::Child,
    pub base: String,
    pub addr: SocketAddr,
}

impl Instance {
    pub async fn start(redis: Option<&RedisServer>, env: &[(&str, &str)]) -> Self {
        use std::process::{Command, Stdio};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_buildlogs"));
        cmd.arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("CLERK_JWT_KEY", &keys().public_pem)
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .env_remove("CLERK_PUBLISHABLE_KEY")
            .env_remove("CLERK_JWKS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(redis) = redis {
            cmd.env("REDIS_URL", redis.url());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let instance = Self {
            child: cmd.spawn().unwrap(),
            base: format!("http://{addr}"),
            addr,
        };
        // Asked with `Connection: close` and read to the end, so that the server has let the
        // connection go by the time this returns: its descriptors are the tests' to count.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !healthy(addr).await {
            assert!(std::time::Instant::now() < deadline, "instance came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        instance
    }

    pub async fn stream(&self, job: &JobId, last_event_id: Option<&str>) -> SseClient {
        let mut req = reqwest::Client::new()
            .get(format!("{}/api/jobs/{job}/logs/stream", self.base))
            .bearer_auth(token("user_a"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        SseClient::new(req.send().await.unwrap())
    }

    pub async fn metric(&self, name: &str) -> f64 {
        fetch_metric(&reqwest::Client::new(), &self.base, name).await
    }

    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// The process's open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Waits until the process holds at most `fds` descriptors, failing past `deadline`.
    pub async fn fds_back_to(&self, fds: usize, deadline: std::time::Instant) {
        while self.fds() > fds {
            assert!(
                std::time::Instant::now() < deadline,
                "descriptors: {fds} before, {} now",
                self.fds()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

/// Whether `GET /healthz` on `addr` answers 200, on a connection the server closes.
async fn healthy(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut answer = Vec::new();
    tcp.write_all(req).await.is_ok()
        && tcp.read_to_end(&mut answer).await.is_ok()
        && answer.starts_with(b"HTTP/1.1 200 ")
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an HTTP/2 response's body ended, as its client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum H2End {
    /// END_STREAM, after this many bytes of body.
    EndStream(usize),
    /// RST_STREAM with this reason, after this many bytes of body.
    Reset(h2::Reason, usize),
    /// The connection went (GOAWAY, close) first.
    ConnectionGone(String),
}

/// An HTTP/2 client with prior knowledge whose streams' windows start at `window` bytes and
/// are never opened further (its connection window is large, so a stream's own window is what
/// holds the server back). Its connection task answers PINGs and reads every frame.
pub struct H2Peer {
    pub send: h2::client::SendRequest<bytes::Bytes>,
    pub conn: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl H2Peer {
    pub async fn connect(addr: SocketAddr, window: u32) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(window)
            .initial_connection_window_size(1 << 30)
            .handshake(tcp)
            .await
            .unwrap();
        Self {
            send,
            conn: tokio::spawn(conn),
        }
    }

    /// Sends `GET path` (with `token` as a Bearer, if any) and waits for the response's head.
    pub async fn get(
        &mut self,
        path: &str,
        token: Option<&str>,
    ) -> poem::http::Response<h2::RecvStream> {
        let mut req = poem::http::Request::get(format!("http://x{path}"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let send = self.send.clone().ready().await.unwrap();
        let mut send = send;
        let (resp, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("a response head in time")
            .unwrap()
    }

    /// Whether the server closed the connection within `within`, having said so with GOAWAY.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        if tokio::time::timeout(within, &mut self.conn).await.is_err() {
            return false;
        }
        match self.send.clone().ready().await {
            Err(err) if err.is_go_away() => true,
            other => panic!("closed without a GOAWAY: {:?}", other.err()),
        }
    }
}

impl Drop for H2Peer {
    /// The client goes away: its connection closes.
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// Reads `body` (releasing nothing of its window) until it ends, within `within`.
pub async fn h2_end(body: &mut h2::RecvStream, within: Duration) -> H2End {
    let mut bytes = 0;
    let read = async {
        loop {
            match body.data().await {
                Some(Ok(data)) => bytes += data.len(),
                Some(Err(err)) if err.is_reset() => {
                    return H2End::Reset(err.reason().unwrap(), bytes);
                }
                Some(Err(err)) => return H2End::ConnectionGone(err.to_string()),
                None => return H2End::EndStream(bytes),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the stream ended in time")
}
