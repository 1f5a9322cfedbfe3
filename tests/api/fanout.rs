//! The fan-out engine (issue 5): Redis work per line independent of viewers, bounded
//! connections, lossless joins, slow viewers that neither block others nor grow memory.

use std::{collections::HashMap, time::Duration};

use buildlogs::{ids::StreamId, writer::Source};

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

#[tokio::test]
async fn joining_during_a_burst_loses_nothing() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let writer = app.writer.clone();
    let j = job.clone();
    let burst = tokio::spawn(async move {
        for i in 0..3000 {
            writer
                .append(&j, Source::Stdout, "build", &format!("b{i}"))
                .await
                .unwrap();
        }
        writer.set_status(&j, "ready", "").await.unwrap();
    });
    let mut joiners = Vec::new();
    for _ in 0..8 {
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        let start: StreamId = sse.start().await.id.unwrap().parse().unwrap();
        joiners.push((start, sse));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    burst.await.unwrap();
    let all = app
        .store
        .range_after(&job, StreamId::ZERO, 10_000)
        .await
        .unwrap();
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
