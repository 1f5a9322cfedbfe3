//! The connection edge on the wire (raw sockets): every stream ends on every path, however its
//! client leaves or stalls, and the requests around a stream get well-framed answers.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

/// A raw stream request; returns the connection once `start` has arrived.
async fn open_raw(app: &TestApp, job: &str, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: start") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("start in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before start: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    tcp
}

/// Waits until `gauge` is `value`, failing past `within`.
async fn gauge_within(app: &TestApp, gauge: &str, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = app.metric(gauge).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{gauge} still {now} after {within:?}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_that_sent_stray_bytes_then_left_frees_its_stream_at_once() {
    // Heartbeats far apart: no write will reveal the departure.
    let app = spawn_app_with(Backend::Redis, |c| c.heartbeat_secs = 300).await;
    let job = app.job("user_a", "code").await;
    for how in ["fin", "rst"] {
        let mut tcp = open_raw(&app, job.as_str(), &token("user_a")).await;
        gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
        // Bytes nobody asked for: a pipelined request and garbage.
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nnoise noise noise")
            .await
            .unwrap();
        tcp.flush().await.unwrap();
        leave_and_expect_release(&app, tcp, how).await;
    }
}

/// Closes the client's side (`"fin"`, or `"rst"`: a reset), then expects its stream and the
/// job's feed released within a second.
async fn leave_and_expect_release(app: &TestApp, tcp: TcpStream, how: &str) {
    if how == "rst" {
        socket2::SockRef::from(&tcp)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    drop(tcp);
    gauge_within(app, "buildlogs_open_streams", 0.0, Duration::from_secs(1)).await;
    gauge_within(app, "buildlogs_live_jobs", 0.0, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_busy_stream_whose_client_left_is_freed_at_once() {
    let app = spawn_app_with(Backend::Redis, |c| c.heartbeat_secs = 300).await;
    let job = app.job("user_a", "code").await;
    // A line every 5 ms: the stream always has something to write.
    let lines = keep_writing(&app, &job, "line".into(), Some(Duration::from_millis(5)));
    for how in ["fin", "rst"] {
        let mut tcp = open_raw(&app, job.as_str(), &token("user_a")).await;
        gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
        // Lines are arriving: read some of them.
        let mut got = Vec::new();
        while got.windows(10).filter(|w| *w == b"event: log").count() < 5 {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended early");
            got.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(b"noise").await.unwrap();
        leave_and_expect_release(&app, tcp, how).await;
    }
    lines.abort();
}

/// Appends `<i> <text>` lines to `job` until aborted: one every `every`, or as fast as the
/// store takes them when `None`.
fn keep_writing(
    app: &TestApp,
    job: &buildlogs::ids::JobId,
    text: String,
    every: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    let writer = app.writer.clone();
    let job = job.clone();
    tokio::spawn(async move {
        let mut tick = every.map(tokio::time::interval);
        for i in 0u64.. {
            match tick.as_mut() {
                Some(tick) => {
                    tick.tick().await;
                }
                None if i % 50 == 0 => tokio::task::yield_now().await,
                None => {}
            }
            writer
                .append(
                    &job,
                    buildlogs::runner_format::Source::Stdout,
                    "build",
                    &format!("{i} {text}"),
                )
                .await
                .unwrap();
        }
    })
}

/// Floods `job` with long lines until aborted, so a stalled reader's writes block.
fn flood(app: &TestApp, job: &buildlogs::ids::JobId) -> tokio::task::JoinHandle<()> {
    keep_writing(app, job, "y".repeat(1900), None)
}

#[tokio::test]
async fn a_stalled_reader_is_cut_when_its_token_expires() {
    let app = spawn_app_with(Backend::Redis, |c| {
        c.jwt_leeway_secs = 0;
        c.max_streams_per_user = 1;
        c.viewer_max_lag = 10_000_000;
        c.stream_stall_secs = 600;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let exp = now() + 3;
    let short = token_with(json!({"sub": "user_a", "exp": exp}));
    let _stalled = stalled_viewer(&app, job.as_str(), &short).await;
    gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
    let flooding = flood(&app, &job);
    // The writes block long before the token expires; the cut comes within a second of it.
    let until_expiry = Duration::from_secs(exp.saturating_sub(now()));
    gauge_within(
        &app,
        "buildlogs_open_streams",
        0.0,
        until_expiry + Duration::from_millis(1500),
    )
    .await;
    flooding.abort();
    assert_eq!(
        app.metric("buildlogs_slow_viewers_disconnected_total")
            .await,
        0.0,
        "ended by its token, not by the lag limit"
    );
    assert_eq!(
        app.metric("buildlogs_stalled_streams_disconnected_total")
            .await,
        0.0,
        "ended by its token, not by the stall limit"
    );
    // Its slot is free again: the one stream this user may hold opens.
    let mut again = app.stream(&job, &token("user_a"), None).await;
    assert_eq!(again.status, 200);
    again.start().await;
}

#[tokio::test]
async fn a_stalled_reader_is_cut_after_the_stall_limit() {
    let app = spawn_app_with(Backend::Redis, |c| {
        c.viewer_max_lag = 10_000_000;
        c.stream_stall_secs = 2;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let started = Instant::now();
    let _stalled = stalled_viewer(&app, job.as_str(), &token("user_a")).await;
    gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
    let flooding = flood(&app, &job);
    gauge_within(&app, "buildlogs_open_streams", 0.0, Duration::from_secs(6)).await;
    flooding.abort();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the stall limit: {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.metric("buildlogs_slow_viewers_disconnected_total")
            .await,
        0.0,
        "ended by the stall limit, not by the lag limit"
    );
    assert_eq!(
        app.metric("buildlogs_stalled_streams_disconnected_total")
            .await,
        1.0,
        "counted as a stall"
    );
}

#[tokio::test]
async fn a_stalled_reader_is_cut_when_its_job_is_revoked() {
    // Neither the stall limit nor the lag limit can end it within the test: only the
    // revocation (the record vanishes) can, and within 5 s (§2), though its writes are blocked
    // and its task never gets to take the feed's `Revoked` message.
    let app = spawn_app_with(Backend::Redis, |c| {
        c.viewer_max_lag = 10_000_000;
        c.stream_stall_secs = 600;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let _stalled = stalled_viewer(&app, job.as_str(), &token("user_a")).await;
    gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
    let flooding = flood(&app, &job);
    // Far more than the socket buffers hold: the stream's writes are blocked.
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg(job.logs_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        if len > 2_000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(app.metric("buildlogs_open_streams").await, 1.0);
    let _: i64 = redis::cmd("DEL")
        .arg(job.record_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    gauge_within(&app, "buildlogs_open_streams", 0.0, Duration::from_secs(5)).await;
    flooding.abort();
    for (counter, what) in [
        ("buildlogs_stalled_streams_disconnected_total", "stall"),
        ("buildlogs_slow_viewers_disconnected_total", "lag"),
    ] {
        assert_eq!(app.metric(counter).await, 0.0, "ended by the {what} limit");
    }
}

#[tokio::test]
async fn a_stalled_reader_does_not_hold_up_shutdown() {
    let mut app = spawn_app_with(Backend::Redis, |c| {
        c.viewer_max_lag = 10_000_000;
        c.stream_stall_secs = 600;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let _stalled = stalled_viewer(&app, job.as_str(), &token("user_a")).await;
    gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
    let flooding = flood(&app, &job);
    // Let the writes block: the socket buffers hold a few hundred KB at most.
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg(job.logs_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        if len > 2_000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let took = app.shutdown().await;
    flooding.abort();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

#[tokio::test]
async fn responses_pipelined_before_a_stream_arrive_whole_then_the_stream() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let big = "z".repeat(1900);
    for i in 0..500 {
        app.writer
            .append(
                &job,
                buildlogs::runner_format::Source::Stdout,
                "build",
                &format!("{i} {big}"),
            )
            .await
            .unwrap();
    }
    let token = token("user_a");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(app.addr).await.unwrap();
    // A page of about 1 MB, then answers without a body (hyper may hold their heads while the
    // socket is full), then the stream; the client reads nothing until the stream is open.
    const PAGES: usize = 1;
    const HEADS: usize = 300;
    let mut req = String::new();
    for _ in 0..PAGES {
        req.push_str(&format!(
            "GET /api/jobs/{job}/logs?limit=500 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        ));
    }
    for _ in 0..HEADS {
        req.push_str("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    req.push_str(&format!(
        "GET /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    ));
    tcp.write_all(req.as_bytes()).await.unwrap();
    gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(10)).await;
    let line = app.lines(&job, 1).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    // Through a 4 KB receive window, about 1 MB takes ~10 s on loopback alone (each window
    // waits for a delayed ACK): the bound is for a hang, not a speed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let text = loop {
        let n = tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf))
            .await
            .expect("every answer in time")
            .unwrap();
        assert!(n > 0, "closed early after {} bytes", raw.len());
        raw.extend_from_slice(&buf[..n]);
        if raw.windows(12).any(|w| w == b"\nevent: log\n") {
            break String::from_utf8_lossy(&raw).into_owned();
        }
    };
    let mut rest = text.as_str();
    for page in 0..PAGES {
        // Each history response, whole: its declared length of JSON.
        let (head, after) = rest.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "page {page}: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .expect("a length")
            .parse()
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&after[..length]).expect("whole JSON");
        assert_eq!(page_ids(&json).len(), 500);
        rest = &after[length..];
    }
    // Every HEAD answer, whole, in order; then the stream's head.
    for i in 0..HEADS {
        let (head, after) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("HEAD answer {i} is missing"));
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && !head.contains("event-stream"),
            "HEAD answer {i}, whole: {head}"
        );
        rest = after;
    }
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream"),
        "the stream's head follows: {}",
        &rest[..rest.len().min(200)]
    );
    let events = dechunk(rest.as_bytes());
    assert!(events.starts_with("retry: "), "{events}");
    assert!(events.contains("event: start\n"), "{events}");
    assert!(
        events.contains(&format!("id: {}\nevent: log\n", line[0])),
        "{events}"
    );
}

#[tokio::test]
async fn head_on_the_stream_is_headers_only_and_keeps_the_connection() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "HEAD /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        token("user_a")
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("both answered")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200 OK") && rest.ends_with("ok\n"),
        "no body after HEAD, then the next answer: {rest}"
    );
    gauge_within(&app, "buildlogs_open_streams", 0.0, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http_1_0_streams_end_with_the_connection_and_say_so() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /api/jobs/{job}/logs/stream HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer {}\r\n\r\n",
        token("user_a")
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    gauge_within(&app, "buildlogs_open_streams", 1.0, Duration::from_secs(5)).await;
    let ids = app.lines(&job, 2).await;
    app.writer.set_status(&job, "ready", "").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after done")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    // The body is the events themselves, no chunk framing.
    assert!(body.starts_with("retry: "), "{body}");
    for id in &ids {
        assert!(body.contains(&format!("id: {id}\nevent: log\n")), "{body}");
    }
    assert!(
        body.ends_with("event: done\ndata: {\"status\":\"ready\"}\n\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_non_ascii_last_event_id_is_malformed_not_absent() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut req = format!(
        "GET /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nLast-Event-ID: ",
        token("user_a")
    )
    .into_bytes();
    req.extend_from_slice("1-\u{e9}".as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    tcp.write_all(&req).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("\"code\":\"invalid_cursor\""), "{text}");
}
