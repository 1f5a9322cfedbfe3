//! Operations: health, readiness, metrics, docs, CORS, stream caps, graceful shutdown.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_ready_metrics_docs() {
    let app = spawn_app().await;
    app.client()
        .get("/healthz")
        .send()
        .await
        .assert_status_is_ok();
    app.client()
        .get("/readyz")
        .send()
        .await
        .assert_status_is_ok();
    let metrics = app.client().get("/metrics").send().await;
    metrics.assert_status_is_ok();
    let text = metrics.0.into_body().into_string().await.unwrap();
    for name in [
        "buildlogs_open_streams",
        "buildlogs_lines_delivered_total",
        "buildlogs_redis_errors_total",
        "buildlogs_stalled_streams_disconnected_total",
        "buildlogs_auth_failures_total",
        "buildlogs_http_request_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} in /metrics");
    }
    let docs = app.client().get("/docs").send().await;
    docs.assert_status_is_ok();
    let html = docs.0.into_body().into_string().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
    for remote in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "@import",
    ] {
        assert!(
            !html.contains(remote),
            "Swagger UI assets are served by the binary itself ({remote})"
        );
    }
}

#[tokio::test]
async fn readyz_turns_503_when_redis_is_down_and_back_after() {
    let mut app = spawn_app().await;
    app.client()
        .get("/readyz")
        .send()
        .await
        .assert_status_is_ok();
    app.redis.as_mut().unwrap().kill();
    let resp = app.client().get("/readyz").send().await;
    assert_eq!(resp.0.status(), 503);
    assert_eq!(resp.0.headers()["content-type"], "application/problem+json");
    // History is a 503 problem within 5 s, not a 500 and not a hang.
    let job = "some-job";
    let started = std::time::Instant::now();
    let resp = app
        .client()
        .get(format!("/api/jobs/{job}/logs"))
        .header("Authorization", format!("Bearer {}", token("user_a")))
        .send()
        .await;
    assert_eq!(resp.0.status(), 503);
    assert!(resp.0.headers().get("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value =
        serde_json::from_str(&resp.0.into_body().into_string().await.unwrap()).unwrap();
    assert_eq!(body["code"], "store_unavailable");
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connection")
    );
    assert!(app.metric("buildlogs_redis_errors_total").await >= 1.0);

    app.redis.as_mut().unwrap().restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.client().get("/readyz").send().await.0.status() != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready again after Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_app_with(Backend::Memory, |c| {
        c.cors_allowed_origins = vec!["http://localhost:5173".into()]
    })
    .await;
    let resp = app
        .client()
        .options("/api/jobs/x/logs")
        .header("Origin", "http://localhost:5173")
        .header("Access-Control-Request-Method", "GET")
        .header(
            "Access-Control-Request-Headers",
            "authorization,last-event-id",
        )
        .send()
        .await;
    assert!(resp.0.status().is_success());
    assert_eq!(
        resp.0.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let resp = app
        .client()
        .get("/healthz")
        .header("Origin", "http://evil.test")
        .send()
        .await;
    assert!(
        resp.0
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn stream_caps_are_429_with_retry_after_and_free_on_close() {
    let app = spawn_app_with(Backend::Redis, |c| {
        c.max_streams_per_user = 2;
        c.max_streams = 3;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let mut a1 = app.stream(&job, &token("user_a"), None).await;
    a1.start().await;
    let mut a2 = app.stream(&job, &token("user_a"), None).await;
    a2.start().await;
    let refused = app.stream(&job, &token("user_a"), None).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused
            .headers
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(refused.headers["content-type"], "application/problem+json");

    // Others are under the per-user cap until the total is reached.
    let job_b = app.job("user_b", "code").await;
    let mut b1 = app.stream(&job_b, &token("user_b"), None).await;
    b1.start().await;
    assert_eq!(
        app.stream(&job_b, &token("user_b"), None).await.status,
        429,
        "total cap"
    );

    // Open streams are untouched by refusals.
    let line = app.lines(&job, 1).await;
    assert_eq!(a1.next_non_heartbeat().await.unwrap().id.unwrap(), line[0]);

    // A response that ends at once is never refused: start + done, and a 204.
    let done_job = app.job("user_a", "ready").await;
    let done_ids = app.lines(&done_job, 3).await;
    let mut finished = app.stream(&done_job, &token("user_a"), None).await;
    assert_eq!(finished.status, 200);
    finished.start().await;
    assert_eq!(finished.next_within(5).await.unwrap().event, "done");
    let nothing_left = app
        .stream(&done_job, &token("user_a"), Some(&done_ids[2]))
        .await;
    assert_eq!(nothing_left.status, 204);
    // But a resume of a finished job that still has lines to send is a stream like any other.
    let resumed = app
        .stream(&done_job, &token("user_a"), Some(&done_ids[0]))
        .await;
    assert_eq!(
        resumed.status, 429,
        "a finished job's remaining lines take a slot"
    );

    // Closing a stream frees its slot.
    drop(a2);
    app.lines(&job, 1).await;
    app.await_metric("buildlogs_open_streams", 2.0).await;
    let mut again = app.stream(&job, &token("user_a"), None).await;
    assert_eq!(again.status, 200);
    again.start().await;
    assert!(app.metric("buildlogs_streams_rejected_total").await >= 2.0);
}

#[tokio::test]
async fn shutdown_ends_open_streams_cleanly_and_promptly() {
    let mut app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        sse.start().await;
        streams.push(sse);
    }
    let took = app.shutdown().await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    for mut sse in streams {
        assert!(sse.next_within(5).await.is_none(), "stream ended cleanly");
        // No short retry at shutdown: the stream's first `retry:` spreads the reconnections.
        assert_eq!(sse.raw.matches("retry:").count(), 1, "{}", sse.raw);
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_serves_history_and_streams() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    append_lines(&app.writer, &job, 3, "old ").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let page = h2
        .get(app.url(&format!("/api/jobs/{job}/logs")))
        .bearer_auth(token("user_a"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.version(), reqwest::Version::HTTP_2);
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    assert_eq!(page_ids(&page).len(), 3);

    // Two streams multiplexed on the one connection, both live.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let resp = h2
            .get(app.url(&format!("/api/jobs/{job}/logs/stream")))
            .bearer_auth(token("user_a"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        let mut sse = SseClient::new(resp);
        sse.start().await;
        streams.push(sse);
    }
    let ids = append_lines(&app.writer, &job, 2, "new ").await;
    for sse in &mut streams {
        for id in &ids {
            let ev = sse.next_non_heartbeat().await.expect("a line");
            assert_eq!(ev.event, "log");
            assert_eq!(ev.id.as_deref(), Some(id.as_str()));
        }
    }
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_too() {
    let mut app = spawn_app().await;
    // A raw HTTP/1.1 connection that makes one request and then sits idle, kept alive.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = app.shutdown().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // The server closed its end rather than leaving the connection open.
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed");
}
