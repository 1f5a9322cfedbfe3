//! Several instances on one Redis, as real processes: identical sequences, SIGKILL failover with
//! `Last-Event-ID`, SIGTERM drain within the bound, and churn that leaves nothing behind.

use std::time::{Duration, Instant};

use buildlogs::ids::JobId;

use crate::helpers::*;

async fn log_ids(sse: &mut SseClient, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let ev = sse.next_non_heartbeat().await.expect("open");
        assert_eq!(ev.event, "log");
        ids.push(ev.id.unwrap());
    }
    ids
}

#[tokio::test]
async fn two_instances_failover_and_drain() {
    let redis = RedisServer::start();
    let a = Instance::start(Some(&redis), &[]).await;
    let b = Instance::start(Some(&redis), &[]).await;
    let w = redis_writer(&redis);
    let job = unique_job();
    w.create_job(&job, "user_a", "code").await.unwrap();

    let mut on_a = a.stream(&job, None).await;
    let mut on_b = b.stream(&job, None).await;
    let start_a = on_a.start().await.id.unwrap();
    let start_b = on_b.start().await.id.unwrap();
    assert_eq!(start_a, start_b);
    let first = append_lines(&w, &job, 100, "l").await;
    let seen_a = log_ids(&mut on_a, 60).await;
    let seen_b = log_ids(&mut on_b, 100).await;
    assert_eq!(seen_b, first, "instance b: every line in order");
    assert_eq!(seen_a, first[..60], "instance a: the same sequence");

    // Instance a dies without a word; its viewer resumes on b where it left off.
    a.signal("-KILL");
    let cut = loop {
        if let Err(end) = on_a.next_or_end().await {
            break end;
        }
    };
    assert!(
        matches!(cut, End::Cut(_)),
        "a killed instance cuts its streams: {cut:?}"
    );
    let second = append_lines(&w, &job, 50, "l").await;
    let mut resumed = b.stream(&job, Some(seen_a.last().unwrap())).await;
    assert_eq!(resumed.status, 200);
    resumed.start().await;
    let mut after = log_ids(&mut resumed, 90).await;
    let mut all: Vec<String> = seen_a.clone();
    all.append(&mut after);
    let expected: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(
        all, expected,
        "nothing lost or repeated across the failover"
    );
    assert_eq!(log_ids(&mut on_b, 50).await, second);

    // SIGTERM with streams open: they end cleanly and the process exits within the bound.
    let mut b = b;
    let started = Instant::now();
    b.signal("-TERM");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), on_b.next())
            .await
            .unwrap()
            .is_none()
    );
    let status = loop {
        if let Some(status) = b.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exited within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}

#[tokio::test]
async fn thousand_connect_disconnect_cycles_leave_nothing_behind() {
    let redis = RedisServer::start();
    let server = Instance::start(Some(&redis), &[]).await;
    let w = redis_writer(&redis);
    let jobs: Vec<JobId> = (0..10).map(|_| unique_job()).collect();
    for job in &jobs {
        w.create_job(job, "user_a", "code").await.unwrap();
    }
    let cycle = |i: usize| {
        let job = jobs[i % jobs.len()].clone();
        let server = &server;
        async move {
            let mut sse = server.stream(&job, None).await;
            assert_eq!(sse.status, 200);
            sse.start().await;
        }
    };
    // Warm up allocator pools and connection buffers, then measure.
    for i in 0..200 {
        cycle(i).await;
    }
    server_quiesce(&server).await;
    let rss_before = server.rss_kb();
    for round in 0..100 {
        futures_util::future::join_all((0..10).map(|i| cycle(round * 10 + i))).await;
    }
    server_quiesce(&server).await;
    let rss_after = server.rss_kb();
    assert_eq!(server.metric("buildlogs_open_streams").await, 0.0);
    assert_eq!(server.metric("buildlogs_live_jobs").await, 0.0);
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS flat over 1,000 cycles: {rss_before} kB → {rss_after} kB"
    );
}

/// Waits (polling the instance's metrics, bounded) until a metric has `value`.
async fn await_metric(server: &Instance, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = server.metric(name).await;
        if current == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {current}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn server_quiesce(server: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("buildlogs_open_streams").await != 0.0
        || server.metric("buildlogs_live_jobs").await != 0.0
    {
        assert!(Instant::now() < deadline, "streams released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_viewer_that_never_reads_does_not_grow_server_memory() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let server = Instance::start(Some(&redis), &[("VIEWER_MAX_LAG", "1000")]).await;
    let w = redis_writer(&redis);
    let job = unique_job();
    w.create_job(&job, "user_a", "code").await.unwrap();

    // Five clients that send a request and then never read a byte.
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = raw_stream_get(&job, &token("user_a"));
        tcp.write_all(req.as_bytes()).await.unwrap();
        stalled.push(tcp);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("buildlogs_open_streams").await < 5.0 {
        assert!(Instant::now() < deadline, "streams opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bursts of 30 MB of log text each: far more than socket buffers and the feed's ring. The
    // first one fills every bounded buffer; after it, memory must plateau, however much follows.
    let burst = |round: usize| {
        let job = job.clone();
        let redis_url = redis.url();
        async move {
            let text = "z".repeat(2000);
            let client = redis::Client::open(redis_url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for chunk in 0..15 {
                let mut pipe = redis::pipe();
                for i in 0..1000 {
                    pipe.cmd("XADD")
                        .arg(job.logs_key())
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(50_000)
                        .arg("*")
                        .arg("ts")
                        .arg("t")
                        .arg("source")
                        .arg("stdout")
                        .arg("text")
                        .arg(format!("{round}-{chunk}-{i} {text}"))
                        .arg("phase")
                        .arg("build")
                        .ignore();
                }
                let _: () = pipe.query_async(&mut conn).await.unwrap();
            }
        }
    };
    // The first burst fills every bounded buffer and takes the stalled viewers past their lag
    // limit: the server has pushed what it will once it has cut all five and let the feed go.
    burst(0).await;
    await_metric(&server, "buildlogs_slow_viewers_disconnected_total", 5.0).await;
    await_metric(&server, "buildlogs_open_streams", 0.0).await;
    await_metric(&server, "buildlogs_live_jobs", 0.0).await;
    let rss_filled = server.rss_kb();
    for round in 1..4 {
        burst(round).await;
        await_metric(&server, "buildlogs_live_jobs", 0.0).await;
    }
    let rss_after = server.rss_kb();
    assert!(
        rss_after < rss_filled + 8 * 1024,
        "memory plateaus with 5 stalled viewers and 90 MB more lines: {rss_filled} kB → {rss_after} kB"
    );
    drop(stalled);
}
