//! Redis faults mid-stream: the reader's connection killed, Redis restarted, Redis away for a
//! while. Nothing is lost or repeated; readiness and history say 503 while it is down.

use std::time::Duration;

use buildlogs::runner_format::Source;

use crate::helpers::*;

async fn kill_clients_named(redis: &RedisServer, name: &str) -> usize {
    let mut conn = redis.conn().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut killed = 0;
    for line in list
        .lines()
        .filter(|l| l.contains(&format!(" name={name} ")))
    {
        let id = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("id="))
            .unwrap();
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut conn)
            .await
            .unwrap();
        killed += n as usize;
    }
    killed
}

/// Waits (polling the metrics endpoint, bounded) until a counter reaches `at_least`.
async fn await_metric_at_least(app: &TestApp, name: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = app.metric(name).await;
        if value >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {value}, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads log ids until `n` have arrived (heartbeats skipped).
async fn read_ids(sse: &mut SseClient, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let ev = sse.next_non_heartbeat().await.expect("stream still open");
        assert_eq!(ev.event, "log", "{ev:?}");
        ids.push(ev.id.unwrap());
    }
    ids
}

#[tokio::test]
async fn live_reader_connection_killed_mid_stream() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut expected = app.lines(&job, 50).await;
    let mut got = read_ids(&mut sse, 50).await;
    let killed = kill_clients_named(app.redis.as_ref().unwrap(), "buildlogs-live-reader").await;
    assert!(killed >= 1, "a live reader connection existed");
    expected.extend(app.lines(&job, 50).await);
    got.extend(read_ids(&mut sse, 50).await);
    assert_eq!(
        got, expected,
        "nothing lost or repeated across the reconnect"
    );
    app.writer.set_status(&job, "ready", "").await.unwrap();
    let (rest, done) = sse.until_done().await;
    assert!(rest.is_empty() && done.is_some());
}

#[tokio::test]
async fn redis_restarted_mid_stream() {
    let redis = RedisServer::start_persistent();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let mut app = spawn_with_config(config, Some(redis)).await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut expected = app.lines(&job, 40).await;
    let mut got = read_ids(&mut sse, 40).await;

    app.redis.as_mut().unwrap().restart();
    // The first writes after the restart may race the app's reconnect; the writer retries.
    for i in 0..40 {
        let id = loop {
            match app
                .writer
                .append(&job, Source::Stdout, "build", &format!("after {i}"))
                .await
            {
                Ok(id) => break id,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        expected.push(id.to_string());
    }
    got.extend(read_ids(&mut sse, 40).await);
    assert_eq!(got, expected);
    app.writer.set_status(&job, "ready", "").await.unwrap();
    let (rest, done) = sse.until_done().await;
    assert!(rest.is_empty());
    assert_eq!(done.unwrap().json()["status"], "ready");
}

#[tokio::test]
async fn redis_unreachable_for_a_while() {
    let redis = RedisServer::start_persistent();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let mut app = spawn_with_config(config, Some(redis)).await;
    let job = app.job("user_a", "code").await;
    let history_job = job.clone();
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut expected = app.lines(&job, 20).await;
    let mut got = read_ids(&mut sse, 20).await;

    app.redis.as_mut().unwrap().kill();
    assert_eq!(app.client().get("/readyz").send().await.0.status(), 503);
    let started = std::time::Instant::now();
    let resp = app
        .client()
        .get(format!("/api/jobs/{history_job}/logs"))
        .header("Authorization", format!("Bearer {}", token("user_a")))
        .send()
        .await;
    assert_eq!(resp.0.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "503 within 5 s: {:?}",
        started.elapsed()
    );
    // New streams are refused with 503 too, not 500.
    let refused = app.stream(&job, &token("user_a"), None).await;
    assert_eq!(refused.status, 503);
    drop(refused);

    // Down until the live reader has failed and backed off a few times.
    await_metric_at_least(&app, "buildlogs_live_read_failures_total", 3.0).await;
    app.redis.as_mut().unwrap().restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.client().get("/readyz").send().await.0.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expected.extend(app.lines(&job, 20).await);
    got.extend(read_ids(&mut sse, 20).await);
    assert_eq!(got, expected, "the open stream carried on, nothing lost");
    assert!(app.metric("buildlogs_redis_errors_total").await >= 1.0);

    drop(sse);
    app.await_metric("buildlogs_open_streams", 0.0).await;
    app.await_metric("buildlogs_live_jobs", 0.0).await;
}

#[tokio::test]
async fn redis_hanging_sigstop_then_back() {
    let mut app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut expected = app.lines(&job, 20).await;
    let mut got = read_ids(&mut sse, 20).await;

    // Redis hangs: its sockets stay open and nothing answers.
    app.redis.as_ref().unwrap().pause();
    let bearer = format!("Bearer {}", token("user_a"));
    let timed = |status: u16, started: std::time::Instant, what: &str| {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: {status} after {:?}, not within 5 s",
            started.elapsed()
        );
    };
    let started = std::time::Instant::now();
    let status = app.client().get("/readyz").send().await.0.status().as_u16();
    assert_eq!(status, 503, "readiness");
    timed(status, started, "readyz");
    let started = std::time::Instant::now();
    let resp = app
        .client()
        .get(format!("/api/jobs/{job}/logs"))
        .header("Authorization", bearer.clone())
        .send()
        .await;
    let status = resp.0.status().as_u16();
    assert_eq!(status, 503, "history");
    timed(status, started, "history");
    assert!(resp.0.headers().contains_key("retry-after"));
    // What needs no Redis answers at once; a new stream is a 503 within the bound too.
    let started = std::time::Instant::now();
    assert_eq!(app.client().get("/healthz").send().await.0.status(), 200);
    assert_eq!(app.client().get("/metrics").send().await.0.status(), 200);
    timed(200, started, "healthz and metrics");
    let started = std::time::Instant::now();
    let refused = app.stream(&job, &token("user_a"), None).await;
    assert_eq!(refused.status, 503);
    timed(503, started, "a new stream");
    drop(refused);
    // Hung until the live reader's blocking read has timed out (its only way to fail while
    // Redis keeps its sockets open but answers nothing).
    await_metric_at_least(&app, "buildlogs_live_read_failures_total", 1.0).await;

    app.redis.as_ref().unwrap().resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while app.client().get("/readyz").send().await.0.status() != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready again after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expected.extend(app.lines(&job, 20).await);
    got.extend(read_ids(&mut sse, 20).await);
    assert_eq!(
        got, expected,
        "the open stream waited and carried on, nothing lost"
    );
    let resp = app
        .client()
        .get(format!("/api/jobs/{job}/logs?limit=500"))
        .header("Authorization", bearer)
        .send()
        .await;
    assert_eq!(resp.0.status(), 200, "history recovered alone");
    app.writer.set_status(&job, "ready", "").await.unwrap();
    let (rest, done) = sse.until_done().await;
    assert!(rest.is_empty() && done.is_some());
    let _ = app.shutdown().await;
}
