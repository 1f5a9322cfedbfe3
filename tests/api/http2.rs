//! HTTP/2 clients that keep their flow-control windows closed (issue 23), on the wire with a
//! real h2 client that answers PINGs and reads every frame: every response makes progress or
//! is reset (`RST_STREAM`), every end of an event stream reaches the wire, a connection holding
//! nothing but stalled responses is closed with GOAWAY, and the server's memory and
//! descriptors come back.

use std::time::{Duration, Instant};

use h2::Reason;
use serde_json::json;

use crate::helpers::*;

/// The stall limit of these tests (`STREAM_STALL_SECS`).
const STALL: Duration = Duration::from_secs(2);
/// Slack for the server's timers and a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);
/// The stall limit of the tests that run the server as a process of their own, which open
/// hundreds of streams before it.
const PROCESS_STALL: Duration = Duration::from_secs(4);

fn stall_app(config: &mut buildlogs::Config) {
    config.stream_stall_secs = STALL.as_secs();
}

/// A new connection whose streams' windows start at `window`, with an event stream of `job`
/// open on it (its head received).
async fn stream_on_new_connection(
    addr: std::net::SocketAddr,
    window: u32,
    job: &buildlogs::ids::JobId,
    token: &str,
) -> (H2Peer, h2::RecvStream) {
    let mut peer = H2Peer::connect(addr, window).await;
    let resp = peer
        .get(&format!("/api/jobs/{job}/logs/stream"), Some(token))
        .await;
    assert_eq!(resp.status(), 200);
    (peer, resp.into_body())
}

/// The app on `backend`, with the tests' stall limit and heartbeats every `heartbeat_secs`.
async fn stalling_app(backend: Backend, heartbeat_secs: u64) -> TestApp {
    spawn_app_with(backend, |c| {
        stall_app(c);
        c.heartbeat_secs = heartbeat_secs;
    })
    .await
}

#[tokio::test]
async fn a_stalled_event_stream_is_reset_on_the_wire_and_its_connection_closed() {
    let app = stalling_app(Backend::Memory, 1).await;
    let job = app.job("user_a", "code").await;
    let started = Instant::now();
    let (mut peer, mut body) = stream_on_new_connection(app.addr, 0, &job, &token("user_a")).await;
    app.await_metric("buildlogs_open_streams", 1.0).await;
    assert_eq!(
        h2_end(&mut body, STALL + MARGIN).await,
        H2End::Reset(Reason::CANCEL, 0)
    );
    assert!(started.elapsed() >= STALL, "{:?}", started.elapsed());
    app.await_metric("buildlogs_open_streams", 0.0).await;
    assert_eq!(
        app.metric("buildlogs_stalled_streams_disconnected_total")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("buildlogs_stalled_responses_reset_total").await,
        1.0
    );
    // It was all the connection held: the connection goes too (GOAWAY, then the close).
    assert!(peer.closed_within(MARGIN).await, "connection still open");
    assert_eq!(
        app.metric("buildlogs_stalled_connections_closed_total")
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_expiry_cut_reaches_the_wire_while_the_window_is_closed() {
    let app = spawn_app_with(Backend::Memory, |c| {
        c.jwt_leeway_secs = 0;
        c.stream_stall_secs = 600;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let exp = now() + 2;
    let short = token_with(json!({"sub": "user_a", "exp": exp}));
    let (_peer, mut body) = stream_on_new_connection(app.addr, 0, &job, &short).await;
    let until_expiry = Duration::from_secs(exp.saturating_sub(now()));
    assert_eq!(
        h2_end(&mut body, until_expiry + Duration::from_millis(1500)).await,
        H2End::Reset(Reason::CANCEL, 0)
    );
    app.await_metric("buildlogs_open_streams", 0.0).await;
    assert_eq!(
        app.metric("buildlogs_stalled_responses_reset_total").await,
        0.0,
        "ended by its token, not by the stall limit"
    );
}

#[tokio::test]
async fn shutdown_resets_a_stream_whose_window_is_closed() {
    let mut app = spawn_app_with(Backend::Memory, |c| c.stream_stall_secs = 600).await;
    let job = app.job("user_a", "code").await;
    let (mut peer, mut body) = stream_on_new_connection(app.addr, 0, &job, &token("user_a")).await;
    let ended = tokio::spawn(async move { h2_end(&mut body, Duration::from_secs(2)).await });
    let took = app.shutdown().await;
    assert_eq!(ended.await.unwrap(), H2End::Reset(Reason::CANCEL, 0));
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(peer.closed_within(MARGIN).await, "connection still open");
}

#[tokio::test]
async fn a_revoked_stream_ends_on_the_wire_whether_or_not_its_window_is_open() {
    // A stall limit the test never reaches: a closed window's reset comes from the revocation.
    let app = spawn_app_with(Backend::Redis, |c| {
        c.stream_stall_secs = 600;
        c.heartbeat_secs = 60;
    })
    .await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    for window in [1 << 20, 0] {
        let job = app.job("user_a", "code").await;
        let (_peer, mut body) =
            stream_on_new_connection(app.addr, window, &job, &token("user_a")).await;
        app.await_metric("buildlogs_open_streams", 1.0).await;
        let _: i64 = redis::cmd("DEL")
            .arg(job.record_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        // Within 5 s (§2), either way.
        let end = h2_end(&mut body, Duration::from_secs(5)).await;
        if window == 0 {
            // Nothing can be delivered: reset.
            assert_eq!(end, H2End::Reset(Reason::CANCEL, 0));
        } else {
            // Delivered: `retry:`, `start`, then END_STREAM.
            assert!(matches!(end, H2End::EndStream(n) if n > 0), "{end:?}");
        }
        app.await_metric("buildlogs_open_streams", 0.0).await;
    }
    assert_eq!(
        app.metric("buildlogs_stalled_streams_disconnected_total")
            .await,
        0.0,
        "not ended by the stall limit"
    );
}

#[tokio::test]
async fn a_body_larger_than_the_window_is_reset_not_left_half_sent() {
    // A 401's problem body is about 200 bytes; the peer opens 100 and no more. The body
    // "ends at once", but its end must not be queued behind bytes that never leave.
    let app = spawn_app_with(Backend::Memory, stall_app).await;
    let mut peer = H2Peer::connect(app.addr, 100).await;
    let resp = peer.get("/api/jobs/some-job/logs", None).await;
    assert_eq!(resp.status(), 401);
    let mut body = resp.into_body();
    assert_eq!(
        h2_end(&mut body, STALL + MARGIN).await,
        H2End::Reset(Reason::CANCEL, 100)
    );
    assert_eq!(
        app.metric("buildlogs_stalled_responses_reset_total").await,
        1.0
    );
    assert!(peer.closed_within(MARGIN).await, "connection still open");
}

#[tokio::test]
async fn a_stalled_response_beside_a_live_stream_is_reset_alone() {
    let app = stalling_app(Backend::Memory, 1).await;
    let job = app.job("user_a", "code").await;
    // Windows of 64 KB: the stream reads (and reopens its window), /docs (1.6 MB) never does.
    let mut peer = H2Peer::connect(app.addr, 65_535).await;
    let stream = peer
        .get(
            &format!("/api/jobs/{job}/logs/stream"),
            Some(&token("user_a")),
        )
        .await;
    let docs = peer.get("/docs", None).await;
    assert_eq!(
        (stream.status().as_u16(), docs.status().as_u16()),
        (200, 200)
    );
    let mut docs = docs.into_body();
    let mut stream = stream.into_body();
    let reading = tokio::spawn(async move {
        let mut heartbeats = 0;
        while let Some(Ok(data)) = stream.data().await {
            let _ = stream.flow_control().release_capacity(data.len());
            heartbeats += String::from_utf8_lossy(&data)
                .matches("event: heartbeat")
                .count();
        }
        heartbeats
    });
    assert_eq!(
        h2_end(&mut docs, STALL + MARGIN).await,
        H2End::Reset(Reason::CANCEL, 65_535),
        "the window's worth, then the reset"
    );
    // The stream goes on (heartbeats), and so does the connection.
    let line = app.lines(&job, 1).await;
    let mut next = peer
        .get(
            &format!("/api/jobs/{job}/logs?limit=1"),
            Some(&token("user_a")),
        )
        .await;
    assert_eq!(next.status(), 200);
    let page = next.body_mut().data().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&page).contains(&line[0]));
    assert!(!peer.closed_within(STALL).await, "the connection stays");
    assert_eq!(app.metric("buildlogs_open_streams").await, 1.0);
    assert_eq!(
        app.metric("buildlogs_stalled_connections_closed_total")
            .await,
        0.0
    );
    drop(peer);
    assert!(reading.await.unwrap() >= 2, "heartbeats kept coming");
}

/// The attack of issue 23: anonymous connections, each with as many `GET /docs` as the server
/// allows, windows closed, PINGs answered. The server holds one copy of the page whatever the
/// number of responses, and resets them all and closes the connections by the stall limit.
#[tokio::test]
async fn anonymous_docs_requests_over_closed_windows_cost_little_and_are_closed() {
    let stall = PROCESS_STALL.as_secs().to_string();
    let server = Instance::start(None, &[("STREAM_STALL_SECS", stall.as_str())]).await;
    let _warm = reqwest::get(format!("{}/docs", server.base)).await.unwrap();
    let rss_before = server.rss_kb();
    let mut peers = Vec::new();
    let mut bodies = Vec::new();
    let started = Instant::now();
    for _ in 0..2 {
        let mut peer = H2Peer::connect(server.addr, 0).await;
        let first = peer.get("/docs", None).await;
        let max = peer.send.current_max_send_streams();
        assert!((50..=100).contains(&max), "streams per connection: {max}");
        bodies.push(first.into_body());
        for _ in 1..max {
            let resp = peer.get("/docs", None).await;
            assert_eq!(resp.status(), 200);
            bodies.push(resp.into_body());
        }
        peers.push(peer);
    }
    let rss_peak = server.rss_kb();
    assert!(
        started.elapsed() < PROCESS_STALL,
        "all sent before the stall limit: {:?}",
        started.elapsed()
    );
    let rise_mb = rss_peak.saturating_sub(rss_before) / 1024;
    assert!(rise_mb < 64, "{} responses took {rise_mb} MB", bodies.len());
    for body in &mut bodies {
        let end = h2_end(body, PROCESS_STALL + MARGIN).await;
        assert!(
            matches!(
                end,
                H2End::Reset(Reason::CANCEL, 0) | H2End::ConnectionGone(_)
            ),
            "{end:?}"
        );
    }
    for peer in &mut peers {
        assert!(peer.closed_within(MARGIN).await, "connection still open");
    }
    assert!(started.elapsed() < PROCESS_STALL + 2 * MARGIN);
    assert_eq!(
        server
            .metric("buildlogs_stalled_connections_closed_total")
            .await,
        2.0
    );
}

/// A first connect to a finished job (`start` + `done`, not counted by the caps since it "ends
/// at once") over a closed window, 80 times on 80 connections: each is reset by the stall
/// limit, and the server's descriptors come back.
#[tokio::test]
async fn finished_job_first_connects_over_closed_windows_are_reset_and_give_back_descriptors() {
    let redis = RedisServer::start();
    let stall = PROCESS_STALL.as_secs().to_string();
    let server = Instance::start(Some(&redis), &[("STREAM_STALL_SECS", stall.as_str())]).await;
    let writer = redis_writer(&redis);
    let job = unique_job();
    writer.create_job(&job, "user_a", "ready").await.unwrap();
    append_lines(&writer, &job, 3, "line ").await;
    let fds_before = server.fds();
    let token = token("user_a");
    let mut opened = Vec::new();
    for _ in 0..80 {
        let mut peer = H2Peer::connect(server.addr, 0).await;
        let resp = peer
            .get(&format!("/api/jobs/{job}/logs/stream"), Some(&token))
            .await;
        assert_eq!(resp.status(), 200);
        opened.push((peer, resp.into_body(), Instant::now()));
    }
    assert!(server.fds() >= fds_before + 80, "every connection is held");
    for (peer, body, sent) in &mut opened {
        assert_eq!(
            h2_end(body, PROCESS_STALL + MARGIN).await,
            H2End::Reset(Reason::CANCEL, 0)
        );
        assert!(sent.elapsed() < PROCESS_STALL + MARGIN);
        assert!(peer.closed_within(MARGIN).await, "connection still open");
    }
    let deadline = Instant::now() + MARGIN;
    server.fds_back_to(fds_before, deadline).await;
    assert_eq!(server.metric("buildlogs_open_streams").await, 0.0);
    assert_eq!(
        server
            .metric("buildlogs_stalled_responses_reset_total")
            .await,
        80.0
    );
}
