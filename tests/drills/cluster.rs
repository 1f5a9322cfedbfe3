//! Redis Cluster (contract §8), against a real local cluster of 3 masters and 3 replicas that
//! the harness starts itself: fan-out over many slots, history, `reset`, a master killed and
//! its replica promoted mid-stream, a slot migrated mid-stream, readiness through a failover.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use buildlogs::{
    ids::JobId,
    runner_format::{LogWriter, Source},
};
use buildlogs_test_support::slot::key_slot;
use serde_json::Value;

use crate::helpers::*;

async fn cluster_app(tweak: impl FnOnce(&mut buildlogs::Config)) -> (TestApp, Arc<RedisCluster>) {
    let app = spawn_app_with(Backend::Cluster, tweak).await;
    let cluster = app.cluster.clone().expect("a cluster");
    (app, cluster)
}

/// Appends through `writer`, retrying while the cluster fails over or migrates (a runner
/// retries too): returns the ids of the lines that were written.
async fn append_retrying(writer: &LogWriter, job: &JobId, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let text = format!("{prefix}{i}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            match writer.append(job, Source::Stdout, "build", &text).await {
                Ok(id) => break id,
                Err(err) => {
                    assert!(Instant::now() < deadline, "writes never recovered: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        ids.push(id.to_string());
    }
    ids
}

/// Every line id of `job`'s stream, through the history endpoint (pages of 500).
async fn all_ids(app: &TestApp, job: &JobId, user: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("/api/jobs/{job}/logs?limit=500");
        if let Some(b) = &before {
            url.push_str(&format!("&before_id={b}"));
        }
        let resp = app.get_as(user, &url).await;
        assert_eq!(resp.status(), 200, "history on the cluster");
        let page: Value = resp.json().await.unwrap();
        ids.splice(0..0, page_ids(&page));
        if !page["has_more"].as_bool().unwrap() {
            return ids;
        }
        before = page["oldest_id"].as_str().map(str::to_owned);
    }
}

/// Reads log ids until `n` have arrived, or the stream is done.
async fn read_ids(sse: &mut SseClient, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(20), sse.next())
            .await
            .expect("a line in time")
            .expect("stream open");
        match ev.event.as_str() {
            "log" => ids.push(ev.id.unwrap()),
            "heartbeat" => {}
            other => panic!("unexpected {other}: {ev:?}"),
        }
    }
    ids
}

/// `XREAD` calls served by every master so far.
fn xreads(cluster: &RedisCluster) -> u64 {
    let mut total = 0;
    for master in cluster.masters().unwrap() {
        let info = cluster
            .node_cmd(&master, redis::cmd("INFO").arg("commandstats"))
            .unwrap();
        let info: String = redis::from_redis_value(info).unwrap();
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_xread:"))
            .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[tokio::test]
async fn fifty_jobs_over_the_slots_two_viewers_each_every_line_once_in_order() {
    let (app, cluster) = cluster_app(|c| c.max_streams_per_user = 100).await;
    let jobs: Vec<JobId> = (0..50).map(|_| unique_job()).collect();
    let masters: std::collections::HashSet<String> = jobs
        .iter()
        .map(|j| cluster.master_for_key(j.logs_key()).unwrap())
        .collect();
    assert_eq!(masters.len(), 3, "the jobs' streams live on every master");
    let mut viewers = Vec::new();
    for job in &jobs {
        app.writer.create_job(job, "user_a", "code").await.unwrap();
        for _ in 0..2 {
            let mut sse = app.stream(job, &token("user_a"), None).await;
            assert_eq!(sse.status, 200);
            sse.start().await;
            viewers.push((job.clone(), sse));
        }
    }
    let before = xreads(&cluster);
    let mut written: HashMap<JobId, Vec<String>> = HashMap::new();
    for round in 0..10 {
        for job in &jobs {
            let ids = append_lines(&app.writer, job, 1, &format!("r{round} ")).await;
            written.entry(job.clone()).or_default().extend(ids);
        }
    }
    let lines = (jobs.len() * 10) as f64;
    for (job, sse) in &mut viewers {
        let got = read_ids(sse, 10).await;
        assert_eq!(
            &got, &written[job],
            "every line once, in order, for every viewer"
        );
    }
    let per_line = (xreads(&cluster) - before) as f64 / lines;
    assert!(
        per_line <= 1.3,
        "reads per line do not follow the viewers ({per_line:.2} with 2 each)"
    );
}

#[tokio::test]
async fn history_and_reset_after_a_trim_on_a_cluster() {
    let (app, cluster) = cluster_app(|_| {}).await;
    let job = app.job("user_a", "code").await;
    let ids = append_lines(&app.writer, &job, 1200, "h").await;
    assert_eq!(
        all_ids(&app, &job, "user_a").await,
        ids,
        "paging visits every line once"
    );

    // A `job:{id}` key of another type is no such job on a cluster too.
    let odd = unique_job();
    let mut conn = redis::cluster::ClusterClient::new(cluster.seed_urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(odd.record_key())
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let resp = app.get_as("user_a", &format!("/api/jobs/{odd}/logs")).await;
    assert_eq!(resp.status(), 404);

    let trimmed = app.job("user_a", "code").await;
    let ids = append_lines(&app.writer.clone().with_maxlen(5), &trimmed, 300, "t").await;
    let retained = all_ids(&app, &trimmed, "user_a").await;
    assert!(retained.len() < 300);
    let mut sse = app.stream(&trimmed, &token("user_a"), Some(&ids[3])).await;
    sse.start().await;
    let reset = sse.next_within(5).await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json()["reason"], "trimmed");
    assert_eq!(reset.json()["oldest_id"], retained[0].as_str());
    assert_eq!(read_ids(&mut sse, retained.len()).await, retained);
}

#[tokio::test]
async fn a_master_killed_mid_stream_loses_and_repeats_nothing() {
    let (app, cluster) = cluster_app(|_| {}).await;
    let job = app.job("user_a", "code").await;
    let victim = cluster.master_for_key(job.logs_key()).unwrap();
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut got = read_ids(&mut sse, 0).await;
    let first = append_lines(&app.writer, &job, 30, "before ").await;
    got.extend(read_ids(&mut sse, 30).await);
    assert_eq!(got, first);

    // The master of the job's stream dies; its replica is promoted while lines keep coming.
    let writer = app.writer.clone();
    let busy_job = job.clone();
    let writing =
        tokio::spawn(async move { append_retrying(&writer, &busy_job, 60, "during ").await });
    cluster
        .blocking(move |c| c.kill_master(&victim))
        .await
        .unwrap();
    let ready_during = Instant::now();
    let status = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        ready_during.elapsed() < Duration::from_secs(5),
        "readiness answers ({status}) within 5 s during the failover"
    );
    // History of a job whose slot has no master: an answer within 5 s (200 or 503), no hang.
    let asked = Instant::now();
    let status = app
        .get_as("user_a", &format!("/api/jobs/{job}/logs"))
        .await
        .status()
        .as_u16();
    assert!(
        matches!(status, 200 | 503) && asked.elapsed() < Duration::from_secs(5),
        "history during the failover: {status} after {:?}",
        asked.elapsed()
    );
    cluster.blocking(|c| c.wait_for_failover()).await.unwrap();
    let during = writing.await.unwrap();
    assert_eq!(during.len(), 60);

    // Whatever the new master holds is delivered exactly once, in order, after what came before.
    let expected = all_ids(&app, &job, "user_a").await;
    let rest = read_ids(&mut sse, expected.len() - got.len()).await;
    got.extend(rest);
    assert_eq!(
        got, expected,
        "nothing lost, nothing repeated across the failover"
    );
    // And it goes on live.
    let after = append_retrying(&app.writer, &job, 5, "after ").await;
    assert_eq!(read_ids(&mut sse, 5).await, after);

    let deadline = Instant::now() + Duration::from_secs(15);
    while app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "ready again after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_slot_migrated_mid_stream_loses_and_repeats_nothing() {
    let (app, cluster) = cluster_app(|_| {}).await;
    let job = app.job("user_a", "code").await;
    let slot = key_slot(job.logs_key());
    let from = cluster.master_for_key(job.logs_key()).unwrap();
    let to = cluster
        .masters()
        .unwrap()
        .into_iter()
        .find(|m| *m != from)
        .unwrap();
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut expected = append_lines(&app.writer, &job, 20, "before ").await;
    let mut got = read_ids(&mut sse, 20).await;

    // The slot starts moving; lines keep coming while the key moves and ownership flips.
    let migration = cluster
        .blocking(move |c| c.begin_migration(slot, &to))
        .await
        .unwrap();
    expected.extend(append_retrying(&app.writer, &job, 20, "migrating ").await);
    got.extend(read_ids(&mut sse, 20).await);
    let migration = Arc::new(migration);
    let moving = migration.clone();
    let key = job.logs_key();
    cluster
        .blocking(move |_| moving.move_key(key))
        .await
        .unwrap();
    expected.extend(append_retrying(&app.writer, &job, 20, "moved ").await);
    got.extend(read_ids(&mut sse, 20).await);
    let finishing = migration.clone();
    cluster
        .blocking(move |c| finishing.finish(c))
        .await
        .unwrap();
    expected.extend(append_retrying(&app.writer, &job, 20, "after ").await);
    got.extend(read_ids(&mut sse, 20).await);
    assert_eq!(
        got, expected,
        "every line once, in order, across the migration"
    );
    assert_eq!(
        all_ids(&app, &job, "user_a").await,
        expected,
        "history agrees"
    );
}
