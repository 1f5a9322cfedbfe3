//! Records and keys no runner writes, read as contract §1 says: a logs key of another type is
//! no stream, a `user_id` that is not UTF-8 owns nothing, a `status` that is not UTF-8 is not
//! terminal; and pages of huge lines read in small steps.

use buildlogs::ids::JobId;
use serde_json::Value;

use crate::helpers::*;

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.get_as("user_a", path).await
}

#[tokio::test]
async fn a_logs_key_of_another_type_is_no_stream_everywhere() {
    let app = spawn_app().await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let running = app.job("user_a", "code").await;
    let finished = app.job("user_a", "ready").await;
    for job in [&running, &finished] {
        let _: () = redis::cmd("SET")
            .arg(job.logs_key())
            .arg("not a stream")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let errors_before = app.metric("buildlogs_redis_errors_total").await;

    let empty_page = serde_json::json!({"lines": [], "has_more": false, "oldest_id": null, "has_newer": false, "newest_id": null});
    for query in ["", "?before_id=1-0", "?after_id=1-0", "?around_id=1-0"] {
        let resp = get(&app, &format!("/api/jobs/{running}/logs{query}")).await;
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.json::<Value>().await.unwrap(), empty_page, "{query}");
    }
    let resp = get(&app, &format!("/api/jobs/{running}/logs/raw")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "");
    let resp = get(&app, &format!("/api/jobs/{running}/logs/search?q=x")).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"matches": [], "scanned_to": null, "has_more": false})
    );

    // A stream with nothing to send yet: it starts, and a line written once the key is a
    // stream arrives, even alongside another job's stream on the same reader.
    let other = app.job("user_a", "code").await;
    let mut other_sse = app.stream(&other, &token("user_a"), None).await;
    other_sse.start().await;
    let mut sse = app.stream(&running, &token("user_a"), None).await;
    assert_eq!(sse.status, 200);
    let start = sse.start().await;
    assert_eq!(start.id.as_deref(), Some("0-0"));
    let line = app.lines(&other, 1).await;
    assert_eq!(
        other_sse.next_non_heartbeat().await.unwrap().id.unwrap(),
        line[0]
    );
    let _: () = redis::cmd("DEL")
        .arg(running.logs_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    let line = app.lines(&running, 1).await;
    assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), line[0]);

    // Resumes: a running job streams, a finished one has nothing left (204).
    let mut resumed = app.stream(&other, &token("user_a"), Some("1-0")).await;
    assert_eq!(resumed.status, 200);
    resumed.start().await;
    let resumed = app.stream(&finished, &token("user_a"), Some("1-0")).await;
    assert_eq!(resumed.status, 204);

    // None of it was a Redis failure.
    assert_eq!(
        app.metric("buildlogs_redis_errors_total").await,
        errors_before
    );
}

#[tokio::test]
async fn a_user_id_that_is_not_utf8_owns_nothing_and_such_a_status_is_not_terminal() {
    let app = spawn_app().await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let orphan = JobId::parse("orphan-job").unwrap();
    let _: () = redis::cmd("HSET")
        .arg(orphan.record_key())
        .arg("user_id")
        .arg(b"user_a\xff".as_slice())
        .arg("status")
        .arg("code")
        .query_async(&mut conn)
        .await
        .unwrap();
    app.lines(&orphan, 2).await;
    for path in ["logs", "logs/stream", "logs/raw", "logs/search?q=line"] {
        let resp = get(&app, &format!("/api/jobs/{orphan}/{path}")).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "job_not_found");
    }

    let odd = app.job("user_a", "code").await;
    let _: () = redis::cmd("HSET")
        .arg(odd.record_key())
        .arg("status")
        .arg(b"ready\xff".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    let resp = get(&app, &format!("/api/jobs/{odd}/logs")).await;
    assert_eq!(resp.status(), 200);
    // Not terminal: a first connect streams live instead of `start` then `done`.
    let mut sse = app.stream(&odd, &token("user_a"), None).await;
    sse.start().await;
    let line = app.lines(&odd, 1).await;
    let next = sse.next_non_heartbeat().await.unwrap();
    assert_eq!(
        (next.event.as_str(), next.id.unwrap()),
        ("log", line[0].clone())
    );
}

/// Bytes Redis has sent its clients so far.
async fn redis_sent(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn pages_of_huge_lines_are_read_in_small_steps() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let huge = "h".repeat(256 * 1024);
    let mut pipe = redis::pipe();
    for i in 0..60 {
        pipe.cmd("XADD")
            .arg(job.logs_key())
            .arg("*")
            .arg("text")
            .arg(format!("{i} {huge}"))
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let url = format!("/api/jobs/{job}/logs?limit=500");
    // The first page learns how large these lines are.
    assert_eq!(get(&app, &url).await.status(), 200);

    for query in ["", "&after_id=0-0", "&around_id=0-0"] {
        let sent = redis_sent(&mut conn).await;
        let resp = get(&app, &format!("{url}{query}")).await;
        let page: Value = resp.json().await.unwrap();
        let lines = page["lines"].as_array().unwrap().len();
        assert!(
            (1..=4).contains(&lines),
            "{query}: a page under 1 MiB: {lines} lines"
        );
        let read = redis_sent(&mut conn).await - sent;
        // Today's fixed 101-entry reads would take all 60 lines (15 MiB).
        assert!(
            read < 3 * 1024 * 1024,
            "{query}: read {} KiB from Redis for a page of {lines} lines",
            read / 1024
        );
    }
}

#[tokio::test]
async fn reads_work_with_a_password_and_a_database_number() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let url = redis
        .url()
        .replace("redis://", "redis://:s3cret@")
        .trim_end_matches('/')
        .to_owned()
        + "/3";
    let mut config = test_config();
    config.redis_url = Some(url.clone());
    let app = spawn_with_config(config, None).await;
    let job = app.job("user_a", "ready").await;
    let ids = app.lines(&job, 3).await;
    // The lines are in database 3, behind the password: the reads found them there.
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg(job.logs_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 3);
    let page: Value = get(&app, &format!("/api/jobs/{job}/logs?around_id={}", ids[1]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page_ids(&page), ids);
    let text = get(&app, &format!("/api/jobs/{job}/logs/raw"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text, "line 0\nline 1\nline 2\n");
    // Without the password, Redis's refusal is a failure (logged), never read as data.
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let refused = spawn_with_config(config, None).await;
    let resp = refused
        .get_as("user_a", &format!("/api/jobs/{job}/logs"))
        .await;
    assert_eq!(resp.status(), 500);
}

#[tokio::test]
async fn a_job_key_of_another_type_is_404_on_download_and_search() {
    let app = spawn_app().await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let job = unique_job();
    let _: () = redis::cmd("SET")
        .arg(job.record_key())
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    app.lines(&job, 2).await;
    for path in ["logs/raw", "logs/search?q=line", "logs?around_id=1-0"] {
        let resp = get(&app, &format!("/api/jobs/{job}/{path}")).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "job_not_found");
    }
}
