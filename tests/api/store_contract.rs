//! One store contract suite, run against every backend (one Redis, a Redis Cluster, embedded),
//! so they cannot drift.

use std::{sync::Arc, time::Duration};

use buildlogs::{
    ids::{JobId, StreamId},
    runner_format::{LogWriter, Source},
    store::{EntryRef, Job, JobStatus, LogStore, Scan, Span},
};
use futures_util::StreamExt;

use crate::helpers::*;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod redis_backend { $( #[tokio::test] async fn $name() { super::$name(super::Backend::Redis).await } )* }
        mod memory_backend { $( #[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await } )* }
        mod cluster_backend { $( #[tokio::test] async fn $name() { super::$name(super::Backend::Cluster).await } )* }
    };
}

both_backends!(
    job_records,
    ids_grow_and_ranges_are_exclusive,
    stream_info_tracks_trimming,
    live_read_wakes_on_append_and_on_interrupt,
    live_read_watches_many_streams,
    status_hints_follow_published_events,
    ranged_reads_with_the_record,
    whole_log_reads_are_the_same_everywhere,
);

/// The backend's store, and the app that keeps its server (or cluster) alive.
async fn store(backend: Backend) -> (Arc<dyn LogStore>, TestApp) {
    let app = spawn_app_with(backend, |_| {}).await;
    (app.store.clone(), app)
}

async fn job_records(backend: Backend) {
    let (store, _redis) = store(backend).await;
    let writer = LogWriter::new(store.clone());
    let job = unique_job();
    assert_eq!(store.job(&job).await.unwrap(), None);
    writer
        .create_job(&job, "user_x", "scheduled")
        .await
        .unwrap();
    let record = store.job(&job).await.unwrap().unwrap();
    assert_eq!(record.user_id, "user_x");
    assert_eq!(record.status, JobStatus("scheduled".into()));
    assert!(!record.status.is_terminal());
    writer.set_status(&job, "failed", "boom").await.unwrap();
    let other = unique_job();
    let records = store.jobs(&[job.clone(), other]).await.unwrap();
    assert_eq!(
        records,
        vec![
            Some(Job {
                user_id: "user_x".into(),
                status: JobStatus("failed".into())
            }),
            None
        ]
    );
    assert!(records[0].as_ref().unwrap().status.is_terminal());
}

async fn ids_grow_and_ranges_are_exclusive(backend: Backend) {
    let (store, _redis) = store(backend).await;
    let writer = LogWriter::new(store.clone());
    let job = unique_job();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            writer
                .append(&job, Source::Stderr, "install", &format!("l{i}"))
                .await
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly grow");
    let after = store.range_after(&job, ids[9], 5).await.unwrap();
    assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), ids[10..15]);
    assert_eq!(after[0].text, "l10");
    assert_eq!(after[0].source, "stderr");
    let before = store.range_before(&job, Some(ids[9]), 3).await.unwrap();
    assert_eq!(
        before.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[8], ids[7], ids[6]]
    );
    let newest = store.range_before(&job, None, 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[29], ids[28]]
    );
    assert!(
        store
            .range_before(&job, Some(StreamId::ZERO), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .range_after(&job, StreamId::MAX, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .range_after(&job, StreamId::ZERO, 100)
            .await
            .unwrap()
            .len(),
        30
    );
    assert!(
        store
            .range_after(&unique_job(), StreamId::ZERO, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn stream_info_tracks_trimming(backend: Backend) {
    let (store, _redis) = store(backend).await;
    let job = unique_job();
    assert_eq!(store.stream_info(&job).await.unwrap(), None);
    let writer = LogWriter::new(store.clone()).with_maxlen(10);
    let mut last = StreamId::ZERO;
    for i in 0..500 {
        last = writer
            .append(&job, Source::Stdout, "p", &format!("{i}"))
            .await
            .unwrap();
    }
    let info = store.stream_info(&job).await.unwrap().unwrap();
    assert_eq!(info.entries_added, 500);
    assert!(info.length >= 10 && info.length < 500, "{}", info.length);
    assert_eq!(info.last_generated_id, last);
    let first = store.range_after(&job, StreamId::ZERO, 1).await.unwrap()[0].id;
    assert_eq!(info.first_id, Some(first));
    assert_eq!(info.max_deleted_id, StreamId::ZERO);
}

async fn live_read_wakes_on_append_and_on_interrupt(backend: Backend) {
    let (store, _redis) = store(backend).await;
    let writer = LogWriter::new(store.clone());
    let job = unique_job();
    let first = writer
        .append(&job, Source::Stdout, "p", "first")
        .await
        .unwrap();
    let reader = store.live_reader().await.unwrap();

    // Already there: returns at once.
    let got = reader
        .read(&[(job.clone(), StreamId::ZERO)], 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got[0].1[0].id, first);

    // Woken by an append.
    let (r, j) = (reader.clone(), job.clone());
    let read =
        tokio::spawn(async move { r.read(&[(j, first)], 10, Duration::from_secs(20)).await });
    let second = loop {
        // Append until the blocked read has seen one (the read may not be blocked yet).
        let id = writer
            .append(&job, Source::Stdout, "p", "second")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if read.is_finished() {
            break id;
        }
    };
    let got = read.await.unwrap().unwrap();
    assert!(got[0].1[0].id > first && got[0].1[0].id <= second);

    // Woken by an interrupt, empty-handed.
    let (r, j) = (reader.clone(), job.clone());
    let started = std::time::Instant::now();
    let read = tokio::spawn(async move {
        r.read(&[(j, StreamId::MAX)], 10, Duration::from_secs(20))
            .await
    });
    while !reader.interrupt().await {
        tokio::task::yield_now().await;
    }
    let got = read.await.unwrap().unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn live_read_watches_many_streams(backend: Backend) {
    let (store, _redis) = store(backend).await;
    let writer = LogWriter::new(store.clone());
    let jobs: Vec<JobId> = (0..50).map(|_| unique_job()).collect();
    for (i, job) in jobs.iter().enumerate().filter(|(i, _)| i % 10 == 3) {
        writer
            .append(job, Source::Stdout, "p", &format!("job {i}"))
            .await
            .unwrap();
    }
    let reader = store.live_reader().await.unwrap();
    let cursors: Vec<(JobId, StreamId)> =
        jobs.iter().map(|j| (j.clone(), StreamId::ZERO)).collect();
    let got = reader
        .read(&cursors, 10, Duration::from_secs(5))
        .await
        .unwrap();
    let mut texts: Vec<String> = got
        .iter()
        .flat_map(|(_, e)| e.iter().map(|e| e.text.clone()))
        .collect();
    texts.sort();
    assert_eq!(texts, ["job 13", "job 23", "job 3", "job 33", "job 43"]);
}

async fn status_hints_follow_published_events(backend: Backend) {
    let (store, _redis) = store(backend).await;
    let writer = LogWriter::new(store.clone());
    let job = unique_job();
    writer.create_job(&job, "user_x", "queued").await.unwrap();
    let mut hints = store.status_hints().await.unwrap();
    writer.set_status(&job, "ready", "done").await.unwrap();
    let hinted = tokio::time::timeout(Duration::from_secs(5), hints.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hinted, job);
}

async fn ranged_reads_with_the_record(backend: Backend) {
    let (store, _app) = store(backend).await;
    let writer = LogWriter::new(store.clone());
    let job = unique_job();
    writer.create_job(&job, "user_x", "code").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            writer
                .append(&job, Source::Stdout, "p", &format!("l{i}"))
                .await
                .unwrap(),
        );
    }
    let (mut newest, mut middle, mut none) = (Vec::new(), Vec::new(), Vec::new());
    let (record, scanned) = {
        let (a, b, c) = (&mut newest, &mut middle, &mut none);
        let mut scans = [
            Scan {
                span: Span::Before(None),
                count: 3,
                sink: Box::new(move |e: EntryRef<'_>| {
                    a.push((e.id, String::from_utf8_lossy(e.text).into_owned()))
                }),
            },
            Scan {
                span: Span::After {
                    after: ids[4],
                    until: Some(ids[7]),
                },
                count: 10,
                sink: Box::new(move |e: EntryRef<'_>| b.push(e.id)),
            },
            Scan {
                span: Span::Before(Some(StreamId::ZERO)),
                count: 10,
                sink: Box::new(move |e: EntryRef<'_>| c.push(e.id)),
            },
        ];
        store.read(&job, true, &mut scans).await.unwrap()
    };
    assert_eq!(record.unwrap().user_id, "user_x");
    assert_eq!(
        newest,
        vec![
            (ids[19], "l19".to_owned()),
            (ids[18], "l18".to_owned()),
            (ids[17], "l17".to_owned())
        ]
    );
    assert_eq!(middle, ids[5..=7], "exclusive after, inclusive until");
    assert!(none.is_empty());
    assert_eq!(
        scanned.iter().map(|s| s.entries).collect::<Vec<_>>(),
        [3, 3, 0]
    );
    assert_eq!(
        scanned[0].largest,
        "2026-11-24T03:05:57.123456+00:00".len() + 6 + 3 + 1
    );
    // No record asked for, or none there: `None`, and the ranges still read.
    let (record, scanned) = store
        .read(
            &unique_job(),
            true,
            &mut [Scan {
                span: Span::Before(None),
                count: 5,
                sink: Box::new(|_: EntryRef<'_>| {}),
            }],
        )
        .await
        .unwrap();
    assert_eq!((record, scanned[0].entries), (None, 0));
}

/// Download, search and paging through the app give the same bytes on every backend.
async fn whole_log_reads_are_the_same_everywhere(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let job = app.job("user_a", "failed").await;
    for text in [
        "\x1b[32mok\x1b[0m one",
        "\x1b]0;title\x07two \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
        "three FAILED",
    ] {
        app.writer
            .append_fields(
                &job,
                &[
                    ("ts", "T"),
                    ("source", "stdout"),
                    ("text", text),
                    ("phase", "p"),
                ],
            )
            .await
            .unwrap();
    }
    let get = |path: String| {
        let app = &app;
        async move {
            let resp = app.get_as("user_a", &path).await;
            assert_eq!(resp.status(), 200, "{path}");
            resp.text().await.unwrap()
        }
    };
    assert_eq!(
        get(format!(
            "/api/jobs/{job}/logs/raw?ansi=strip&timestamps=true"
        ))
        .await,
        "T ok one\nT two link\nT three FAILED\n"
    );
    let found: serde_json::Value =
        serde_json::from_str(&get(format!("/api/jobs/{job}/logs/search?q=LINK")).await).unwrap();
    assert_eq!(found["matches"].as_array().unwrap().len(), 1);
    assert_eq!(found["has_more"], false);
    let newest: serde_json::Value =
        serde_json::from_str(&get(format!("/api/jobs/{job}/logs?limit=1")).await).unwrap();
    let middle: serde_json::Value = serde_json::from_str(
        &get(format!(
            "/api/jobs/{job}/logs?around_id={}&limit=1",
            found["matches"][0]["id"].as_str().unwrap()
        ))
        .await,
    )
    .unwrap();
    assert_eq!(
        middle["lines"], found["matches"],
        "a match opens as its permalink"
    );
    assert_eq!(
        (&middle["has_more"], &middle["has_newer"]),
        (&true.into(), &true.into())
    );
    assert_eq!(newest["lines"][0]["text"], "three FAILED");
}
