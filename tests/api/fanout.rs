//! The fan-out engine (issue 5): Redis work per line independent of viewers, bounded
//! connections, lossless joins, slow viewers that neither block others nor grow memory.

use std::{collections::HashMap, time::Duration};

use buildlogs::{ids::StreamId, runner_format::Source};

use crate::helpers::*;

async fn commandstats(app: &TestApp) -> HashMap<String, u64> {
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

async fn client_count(app: &TestApp) -> usize {
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().count() - 1 // minus this connection
}

#[tokio::test]
async fn redis_reads_per_line_do_not_grow_with_viewers() {
    let app = spawn_app_with(Backend::Redis, |c| c.max_streams_per_user = 100).await;
    let job = app.job("user_a", "code").await;
    let viewers_n = 60;
    let mut viewers = Vec::new();
    for _ in 0..viewers_n {
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        sse.start().await;
        viewers.push(sse);
    }
    let before = commandstats(&app).await;
    let lines = 200;
    let ids = app.lines(&job, lines).await;
    for sse in &mut viewers {
        for id in &ids {
            assert_eq!(&sse.next_non_heartbeat().await.unwrap().id.unwrap(), id);
        }
    }
    let after = commandstats(&app).await;
    let delta = |cmd: &str| after.get(cmd).unwrap_or(&0) - before.get(cmd).unwrap_or(&0);
    let reads =
        delta("xread") + delta("xrange") + delta("xrevrange") + delta("hget") + delta("hmget");
    // One shared blocking read per batch of lines, whatever the number of viewers.
    assert!(
        delta("xread") <= lines as u64 + 2,
        "xread calls: {}",
        delta("xread")
    );
    assert!(
        reads <= lines as u64 + 20,
        "{reads} reads for {lines} lines and {viewers_n} viewers: {after:?}"
    );
}

#[tokio::test]
async fn connections_stay_bounded_with_200_streams_over_100_jobs() {
    let app = spawn_app().await;
    let mut streams = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..100 {
        jobs.push(app.job("user_a", "code").await);
    }
    // 200 streams need the caps raised (one user owns all the jobs here).
    let app = {
        drop(app);
        let redis = RedisServer::start();
        let mut config = test_config();
        config.redis_url = Some(redis.url());
        config.max_streams_per_user = 1000;
        spawn_with_config(config, Some(redis)).await
    };
    jobs.clear();
    for _ in 0..100 {
        jobs.push(app.job("user_a", "code").await);
    }
    for job in jobs.iter().chain(jobs.iter()) {
        let mut sse = app.stream(job, &token("user_a"), None).await;
        sse.start().await;
        streams.push(sse);
    }
    app.await_metric("buildlogs_open_streams", 200.0).await;
    app.await_metric("buildlogs_live_jobs", 100.0).await;
    for job in &jobs {
        app.lines(job, 1).await;
    }
    for sse in &mut streams {
        assert_eq!(sse.next_non_heartbeat().await.unwrap().event, "log");
    }
    let clients = client_count(&app).await;
    let bound = app.state.config().redis_pool_size + app.state.config().redis_live_readers + 1;
    assert!(
        clients <= bound,
        "{clients} Redis connections for 200 streams (bound {bound})"
    );
    drop(streams);
    app.await_metric("buildlogs_live_jobs", 0.0).await;
    assert_eq!(app.state.hub().live_jobs(), 0, "every job's reader stopped");
}

/// Eight viewers join while 3,000 lines are being written: each is told to join a few lines
/// into a segment of the burst, and the writer goes past that segment only once the joiner has
/// its `start`, so every join lands while lines flow, strictly inside the burst.
#[tokio::test]
async fn joining_during_a_burst_loses_nothing() {
    const JOINERS: usize = 8;
    const SEGMENT: usize = 375;
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let writer = app.writer.clone();
    let j = job.clone();
    let (join_now, mut join_when) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (joined, mut until_joined) = tokio::sync::mpsc::unbounded_channel::<()>();
    let burst = tokio::spawn(async move {
        for i in 0..JOINERS * SEGMENT {
            if i % SEGMENT == SEGMENT - 1 {
                until_joined.recv().await.expect("the joiner started");
            }
            writer
                .append(&j, Source::Stdout, "build", &format!("b{i}"))
                .await
                .unwrap();
            if i % SEGMENT == 10 {
                join_now.send(()).unwrap();
            }
        }
        writer.set_status(&j, "ready", "").await.unwrap();
    });
    let mut joiners = Vec::new();
    for _ in 0..JOINERS {
        join_when.recv().await.expect("the burst goes on");
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        let start: StreamId = sse.start().await.id.unwrap().parse().unwrap();
        joiners.push((start, sse));
        joined.send(()).unwrap();
    }
    burst.await.unwrap();
    // Read back in pages: one read of all 3,000 can outlast the store's 2-s command timeout
    // on a loaded machine.
    let mut all = Vec::new();
    loop {
        let after = all
            .last()
            .map_or(StreamId::ZERO, |e: &buildlogs::store::LogEntry| e.id);
        let page = app.store.range_after(&job, after, 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    assert_eq!(all.len(), JOINERS * SEGMENT);
    let (first, last) = (all[0].id, all[all.len() - 1].id);
    for (start, _) in &joiners {
        assert!(
            first < *start && *start < last,
            "joined mid-burst: {first} < {start} < {last}"
        );
    }
    for (start, mut sse) in joiners {
        let (logs, done) = sse.until_done().await;
        assert!(done.is_some());
        let got: Vec<StreamId> = logs
            .iter()
            .map(|e| e.id.as_deref().unwrap().parse().unwrap())
            .collect();
        let expected: Vec<StreamId> = all.iter().map(|e| e.id).filter(|id| *id > start).collect();
        assert_eq!(got, expected, "joined after {start}");
    }
}

/// A raw HTTP client that sends the request and then does not read.
#[tokio::test]
async fn a_stalled_viewer_blocks_nobody_and_is_cut_off_past_its_bound() {
    let app = spawn_app_with(Backend::Redis, |c| c.viewer_max_lag = 500).await;
    let job = app.job("user_a", "code").await;
    let mut stalled = stalled_viewer(&app, job.as_str(), &token("user_a")).await;
    app.await_metric("buildlogs_open_streams", 1.0).await;
    let mut healthy = app.stream(&job, &token("user_a"), None).await;
    healthy.start().await;

    // Far more than socket buffers and the feed's ring hold, read concurrently by the healthy one.
    let big = "x".repeat(1900);
    let total = 3000;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < total {
            let ev = tokio::time::timeout(Duration::from_secs(10), healthy.next_non_heartbeat())
                .await
                .expect("healthy viewer not blocked")
                .expect("healthy viewer not cut off");
            got.push(ev.id.unwrap());
        }
        got
    });
    let mut ids = Vec::new();
    for i in 0..total {
        ids.push(
            app.writer
                .append(&job, Source::Stdout, "build", &format!("{i} {big}"))
                .await
                .unwrap()
                .to_string(),
        );
    }
    let healthy_got = reader.await.unwrap();
    assert!(
        healthy_got == ids,
        "the healthy viewer got every line in order"
    );

    // Now the stalled viewer reads what it can: an in-order prefix with no gap, then the end.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        tcp_read_to_end(&mut stalled, &mut raw),
    )
    .await;
    assert!(read.is_ok(), "the stalled viewer's stream was ended");
    let text = dechunk(&raw);
    let got: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert!(got.len() > 1, "it got a start and some lines");
    let logs = &got[1..];
    assert!(
        logs.len() < ids.len(),
        "cut off before the end ({} lines)",
        logs.len()
    );
    assert!(
        logs.iter().zip(&ids).all(|(a, b)| a == b),
        "in order, no gap"
    );
    assert!(
        app.metric("buildlogs_slow_viewers_disconnected_total")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_briefly_slow_viewer_resyncs_losslessly() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut slow = stalled_viewer(&app, job.as_str(), &token("user_a")).await;
    app.await_metric("buildlogs_open_streams", 1.0).await;
    let big = "y".repeat(1000);
    let mut ids = Vec::new();
    for i in 0..1500 {
        ids.push(
            app.writer
                .append(&job, Source::Stdout, "build", &format!("{i} {big}"))
                .await
                .unwrap()
                .to_string(),
        );
    }
    app.writer.set_status(&job, "ready", "").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tcp_read_to_end(&mut slow, &mut raw),
    )
    .await
    .unwrap();
    let text = dechunk(&raw);
    let got: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .skip(1)
        .collect();
    assert_eq!(got.len(), ids.len(), "every line after lagging");
    assert!(got.iter().zip(&ids).all(|(a, b)| a == b), "in order");
    assert!(text.contains("event: done"));
    assert_eq!(
        app.metric("buildlogs_slow_viewers_disconnected_total")
            .await,
        0.0
    );
}

/// A raw HTTP/1.1 stream request from a client with a small receive buffer that reads its
/// response a little at a time, pausing between reads; returns the response body.
fn paced_viewer(app: &TestApp, job: &str) -> tokio::task::JoinHandle<String> {
    let addr = app.addr;
    let req = raw_stream_get(job, &token("user_a"));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(addr).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if raw.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
            // Pacing, so that the server's writes to this viewer keep meeting a full socket.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        dechunk(&raw)
    })
}

/// Lines reach viewers two ways: the feed writes them to an idle viewer's connection itself,
/// and a viewer whose connection cannot take them at once takes them from the feed's ring (or,
/// behind it, from the store). Viewers that read at different paces move between the two all
/// the time; each must still see every line once, in order, and be counted once.
#[tokio::test]
async fn viewers_reading_at_different_paces_each_get_every_line_once_in_order() {
    let app = spawn_app_with(Backend::Redis, |c| c.max_streams_per_user = 20).await;
    let job = app.job("user_a", "code").await;
    let mut fast = Vec::new();
    for _ in 0..6 {
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        sse.start().await;
        fast.push(sse);
    }
    let paced: Vec<_> = (0..3).map(|_| paced_viewer(&app, job.as_str())).collect();
    app.await_metric("buildlogs_open_streams", 9.0).await;
    let text = "z".repeat(300);
    let mut ids = Vec::new();
    for i in 0..600 {
        if i % 40 == 0 {
            tokio::task::yield_now().await;
        }
        let id = app
            .writer
            .append(&job, Source::Stdout, "build", &format!("{i} {text}"))
            .await
            .unwrap();
        ids.push(id.to_string());
    }
    app.writer.set_status(&job, "ready", "").await.unwrap();
    for sse in &mut fast {
        let (logs, done) = sse.until_done().await;
        let got: Vec<String> = logs.into_iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(got, ids, "a fast viewer sees every line once, in order");
        assert!(done.is_some());
    }
    for viewer in paced {
        let body = tokio::time::timeout(Duration::from_secs(30), viewer)
            .await
            .unwrap()
            .unwrap();
        let got: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .skip(1) // start's
            .collect();
        assert_eq!(got, ids, "a paced viewer sees every line once, in order");
        assert!(body.contains("event: done"));
    }
    app.await_metric("buildlogs_lines_delivered_total", (9 * ids.len()) as f64)
        .await;
    assert_eq!(
        app.metric("buildlogs_slow_viewers_disconnected_total")
            .await,
        0.0
    );
}

/// Lines the client's socket cannot take at once: the feed writes what the socket takes, and
/// the connection sends the rest before anything else, so the stream stays whole.
#[tokio::test]
async fn more_lines_than_the_socket_takes_at_once_arrive_whole() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut viewer = stalled_viewer(&app, job.as_str(), &token("user_a")).await;
    app.await_metric("buildlogs_open_streams", 1.0).await;
    // Small pipelines, so that the feed gets batches of a few lines that it writes to the
    // socket itself; more in all than a socket's send buffer takes at most (4 MiB on Linux by
    // default), so that one of them meets a socket with room for part of it only.
    let text = "w".repeat(1900);
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let mut ids: Vec<String> = Vec::new();
    for burst in 0..700 {
        let mut pipe = redis::pipe();
        for i in burst * 4..(burst + 1) * 4 {
            pipe.cmd("XADD")
                .arg(format!("job:{job}:logs"))
                .arg("*")
                .arg("ts")
                .arg("2026-11-24T03:05:57.123456+00:00")
                .arg("source")
                .arg("stdout")
                .arg("text")
                .arg(format!("{i} {text}"))
                .arg("phase")
                .arg("build");
        }
        let burst: Vec<String> = pipe.query_async(&mut conn).await.unwrap();
        ids.extend(burst);
    }
    app.writer.set_status(&job, "ready", "").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tcp_read_to_end(&mut viewer, &mut raw),
    )
    .await
    .unwrap();
    assert!(raw.ends_with(b"\r\n0\r\n\r\n"), "the stream's last chunk");
    // The path this test is about ran: a put the socket took only part of, whose rest the
    // stream's own task sent.
    let partial = app.metric("buildlogs_partial_puts_total").await;
    assert!(
        partial >= 1.0,
        "no put met a nearly full socket ({partial})"
    );
    let body = dechunk(&raw);
    let logs: Vec<(&str, &str)> = body
        .split("\n\n")
        .filter(|event| event.contains("event: log"))
        .map(|event| {
            let id = event.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            (id, data)
        })
        .collect();
    let got: Vec<&str> = logs.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, ids, "every line once, in order");
    for (i, (_, data)) in logs.iter().enumerate() {
        let line: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(line["text"], format!("{i} {text}"));
    }
    assert!(body.contains("event: done"));
}
