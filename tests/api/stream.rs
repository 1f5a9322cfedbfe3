//! `GET /api/jobs/{job_id}/logs/stream` (contract §3) over a real listener.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildlogs::{ids::StreamId, runner_format::Source};
use serde_json::{Value, json};

use crate::helpers::*;

fn texts(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn headers_retry_start_and_a_history_cursor_that_meets_it() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 7).await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    assert!(sse.headers.get("content-encoding").is_none());

    let retry = sse.next_within(5).await.unwrap();
    let ms = retry.retry.expect("retry field first");
    assert!((1000..=15000).contains(&ms));
    assert!(
        sse.raw.starts_with("retry:"),
        "the very first bytes: {:?}",
        sse.raw
    );
    let start = sse.next_within(5).await.unwrap();
    assert_eq!(start.event, "start");
    assert_eq!(
        start.id.as_deref(),
        Some(ids[6].as_str()),
        "starts after the last line"
    );
    let data = start.json();
    assert_eq!(data["status"], "code");
    assert_eq!(data.as_object().unwrap().len(), 2, "{data}");

    // The cursor makes history return exactly the lines up to and including the start.
    let cursor = data["history_cursor"].as_str().unwrap();
    let page: Value = app
        .http
        .get(app.url(&format!(
            "/api/jobs/{job}/logs?before_id={cursor}&limit=500"
        )))
        .bearer_auth(token("user_a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page_ids(&page), ids);

    // And the stream then carries only new lines.
    app.lines(&job, 1).await;
    let ev = sse.next_non_heartbeat().await.unwrap();
    assert_eq!(ev.event, "log");
    assert_eq!(ev.json()["text"], "line 0");
    assert!(StreamId::new(0, 0) < ev.id.as_deref().unwrap().parse::<StreamId>().unwrap());
}

#[tokio::test]
async fn empty_stream_starts_at_zero() {
    let app = spawn_app().await;
    let job = app.job("user_a", "queued").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    let start = sse.start().await;
    assert_eq!(start.id.as_deref(), Some("0-0"));
    assert_eq!(
        start.json(),
        json!({"status": "queued", "history_cursor": "0-1"})
    );
}

#[tokio::test]
async fn live_only_and_no_line_lost_right_after_the_headers() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    app.lines(&job, 3).await; // before: never sent on first connect
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    // The 200 is in; append before reading a single event.
    let mut expected = Vec::new();
    for i in 0..50 {
        let text = format!("after {i}");
        app.writer
            .append(&job, Source::Stdout, "build", &text)
            .await
            .unwrap();
        expected.push(text);
    }
    sse.start().await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let ev = sse.next_non_heartbeat().await.unwrap();
        assert_eq!(ev.event, "log");
        got.push(ev.json()["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn done_comes_after_every_line_and_then_the_stream_closes() {
    let app = spawn_app().await;
    for (final_status, publish) in [("ready", true), ("failed", true), ("ready", false)] {
        let job = app.job("user_a", "deps").await;
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        sse.start().await;
        let ids = app.lines(&job, 300).await;
        if publish {
            app.writer
                .set_status(&job, final_status, "finished")
                .await
                .unwrap();
        } else {
            // Pub/Sub is lossy: a status change with no event is caught by the periodic check.
            app.store
                .put_job(&job, &[("status", final_status)])
                .await
                .unwrap();
        }
        let (logs, done) = sse.until_done().await;
        let got: Vec<String> = logs.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(
            got, ids,
            "every line, in order, before done ({final_status}, publish={publish})"
        );
        let done = done.expect("done");
        assert_eq!(done.json(), json!({"status": final_status}));
        assert!(sse.next_within(5).await.is_none(), "closed after done");
    }
}

#[tokio::test]
async fn resume_replays_strictly_after_last_event_id_then_goes_live() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 10).await;
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[3])).await;
    let start = sse.start().await;
    assert_eq!(start.id.as_deref(), Some(ids[3].as_str()));
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(sse.next_non_heartbeat().await.unwrap());
    }
    assert_eq!(
        got.iter()
            .map(|e| e.id.clone().unwrap())
            .collect::<Vec<_>>(),
        ids[4..].to_vec()
    );
    let more = app.lines(&job, 2).await;
    for id in more {
        assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), id);
    }
    // An empty header counts as absent: live only.
    let mut fresh = app.stream(&job, &token("user_a"), Some("")).await;
    assert_eq!(fresh.status, 200);
    let start = fresh.start().await;
    assert_ne!(start.id.as_deref(), Some("0-0"));
}

#[tokio::test]
async fn finished_jobs_start_done_or_204() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 4).await;
    app.writer.set_status(&job, "ready", "ok").await.unwrap();

    // First connect: start then done at once.
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    let start = sse.start().await;
    assert_eq!(start.json()["status"], "ready");
    assert_eq!(start.id.as_deref(), Some(ids[3].as_str()));
    assert_eq!(sse.next_within(5).await.unwrap().event, "done");
    assert!(sse.next_within(5).await.is_none());

    // Resume with lines left: start, those lines, done.
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[1])).await;
    sse.start().await;
    let (logs, done) = sse.until_done().await;
    assert_eq!(
        logs.iter()
            .map(|e| e.id.clone().unwrap())
            .collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    assert_eq!(done.unwrap().json()["status"], "ready");

    // Resume with nothing left: 204, so a browser stops reconnecting.
    let resp = app
        .http
        .get(app.url(&format!("/api/jobs/{job}/logs/stream")))
        .bearer_auth(token("user_a"))
        .header("Last-Event-ID", &ids[3])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn heartbeats_on_a_quiet_stream() {
    let app = spawn_app_with(Backend::Redis, |c| c.heartbeat_secs = 1).await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let ev = sse.next_within(3).await.unwrap();
        assert_eq!(ev.event, "heartbeat");
        assert_eq!(ev.data, "{}");
        assert!(ev.id.is_none());
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "not sooner than the interval"
    );
}

#[tokio::test]
async fn text_that_looks_like_sse_stays_one_event() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let nasty = "before\n\nevent: done\ndata: {\"status\":\"ready\"}\n\nid: 9-9\r\nretry: 1\rafter";
    app.writer
        .append_fields(&job, &[("text", nasty)])
        .await
        .unwrap();
    app.lines(&job, 1).await;
    let ev = sse.next_non_heartbeat().await.unwrap();
    assert_eq!(ev.event, "log");
    assert_eq!(ev.json()["text"], nasty);
    assert!(!ev.data.contains('\n'), "data is one line");
    let next = sse.next_non_heartbeat().await.unwrap();
    assert_eq!(next.json()["text"], "line 0");
}

#[tokio::test]
async fn stream_ends_when_the_token_expires_even_when_busy() {
    let app = spawn_app_with(Backend::Redis, |c| c.jwt_leeway_secs = 0).await;
    let job = app.job("user_a", "code").await;
    let exp = now() + 2;
    let short = token_with(json!({"sub": "user_a", "exp": exp}));
    let mut sse = app.stream(&job, &short, None).await;
    sse.start().await;
    let writer = app.writer.clone();
    let busy_job = job.clone();
    let busy = tokio::spawn(async move {
        for i in 0.. {
            writer
                .append(&busy_job, Source::Stdout, "build", &format!("busy {i}"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut lines = 0;
    let mut last = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(6), sse.next())
            .await
            .expect("stream must end")
        {
            Some(ev) if ev.event == "log" => lines += 1,
            Some(ev) => last = Some(ev),
            None => break,
        }
    }
    // When the end reached the client, against the token's `exp` (the leeway is 0 here).
    let ended = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    busy.abort();
    assert!(lines > 10, "the stream was busy ({lines} lines)");
    // Right before the cut, a short `retry:` brings a browser's EventSource back at once.
    let retry = last.and_then(|ev| ev.retry);
    assert!(
        retry.is_some_and(|ms| ms <= 500),
        "a short retry before the expiry cut: {retry:?}"
    );
    assert!(sse.raw.ends_with("\n\n"), "the cut is on a frame boundary");
    let past = ended - exp as f64;
    assert!(
        (0.0..=1.0).contains(&past),
        "ended within a second after the expiry, not before it: {past:.3} s after exp"
    );
}

#[tokio::test]
async fn disconnect_releases_the_stream() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    app.await_metric("buildlogs_open_streams", 1.0).await;
    app.await_metric("buildlogs_live_jobs", 1.0).await;
    // Nothing is written after the client leaves: the server notices the closed socket itself.
    drop(sse);
    app.await_metric("buildlogs_open_streams", 0.0).await;
    app.await_metric("buildlogs_live_jobs", 0.0).await;
}

#[tokio::test]
async fn bad_last_event_id_is_400_invalid_cursor() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    for bad in ["1", "abc", "1-x", "-1-1", "18446744073709551616-1", "1-2-3"] {
        let sse = app.stream(&job, &token("user_a"), Some(bad)).await;
        assert_eq!(sse.status, 400, "{bad}");
        assert_eq!(sse.headers["content-type"], "application/problem+json");
    }
    let resp = app
        .http
        .get(app.url(&format!("/api/jobs/{job}/logs/stream")))
        .bearer_auth(token("user_a"))
        .header("Last-Event-ID", "zz")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_cursor");
}

#[tokio::test]
async fn reset_when_the_resume_point_was_trimmed() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = append_lines(&app.writer.clone().with_maxlen(5), &job, 400, "line ").await;
    let page: Value = app
        .get_as("user_a", &format!("/api/jobs/{job}/logs?limit=500"))
        .await
        .json()
        .await
        .unwrap();
    let retained = page_ids(&page);
    assert!(retained.len() < 400);

    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[10])).await;
    sse.start().await;
    let reset = sse.next_within(5).await.unwrap();
    assert_eq!(reset.event, "reset");
    assert!(reset.id.is_none());
    assert_eq!(
        reset.json(),
        json!({"reason": "trimmed", "oldest_id": retained[0]})
    );
    let mut got = Vec::new();
    for _ in 0..retained.len() {
        got.push(sse.next_non_heartbeat().await.unwrap().id.unwrap());
    }
    assert_eq!(got, retained, "every retained line after the reset");

    // A resume point inside what is retained needs no reset.
    let mut sse = app.stream(&job, &token("user_a"), Some(&retained[1])).await;
    sse.start().await;
    let ev = sse.next_within(5).await.unwrap();
    assert_eq!(ev.event, "log");
    assert_eq!(ev.id.as_deref(), Some(retained[2].as_str()));
}

#[tokio::test]
async fn a_position_past_the_end_resets_and_sends_every_retained_line() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 3).await;
    // Positions this stream never had: just past its last id (a stream deleted and written
    // anew), and far past it (another job's id).
    let last: buildlogs::ids::StreamId = ids[2].parse().unwrap();
    let past = last.next().to_string();
    let mut retained = ids.clone();
    for position in [past.as_str(), "99999999999999-0"] {
        let mut sse = app.stream(&job, &token("user_a"), Some(position)).await;
        let start = sse.start().await;
        assert_eq!(start.id.as_deref(), Some("0-0"), "the stream starts over");
        assert_eq!(start.json()["history_cursor"], "0-1");
        let reset = sse.next_within(5).await.unwrap();
        assert_eq!(reset.event, "reset");
        assert!(reset.id.is_none());
        assert_eq!(
            reset.json(),
            json!({"reason": "unknown_position", "oldest_id": ids[0]})
        );
        let mut got = Vec::new();
        for _ in 0..retained.len() {
            got.push(sse.next_non_heartbeat().await.unwrap().id.unwrap());
        }
        assert_eq!(got, retained, "every retained line, not silence");
        // Then live, not swallowed until the ids pass the bogus position.
        let new = app.lines(&job, 1).await;
        assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), new[0]);
        retained.extend(new);
    }
    // A finished job answers such a position with 204, like any resume with nothing after it.
    let done = app.job("user_a", "ready").await;
    app.lines(&done, 2).await;
    let sse = app
        .stream(&done, &token("user_a"), Some("99999999999999-0"))
        .await;
    assert_eq!(sse.status, 204);
}

#[tokio::test]
async fn reset_after_xdel_and_after_the_stream_expired() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 6).await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let _: i64 = redis::cmd("XDEL")
        .arg(job.logs_key())
        .arg(&ids[4])
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[2])).await;
    sse.start().await;
    let reset = sse.next_within(5).await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json()["oldest_id"], ids[0].as_str());
    let got: Vec<String> = vec![
        sse.next_within(5).await.unwrap().id.unwrap(),
        sse.next_within(5).await.unwrap().id.unwrap(),
    ];
    assert_eq!(got, vec![ids[3].clone(), ids[5].clone()]);

    // The whole key expired.
    let _: i64 = redis::cmd("DEL")
        .arg(job.logs_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[5])).await;
    sse.start().await;
    let reset = sse.next_within(5).await.unwrap();
    assert_eq!(
        reset.json(),
        json!({"reason": "trimmed", "oldest_id": null})
    );
    // Lines written afterwards still arrive.
    let new = app.lines(&job, 1).await;
    assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), new[0]);
    // 0-0 on a vanished stream is just "from the start".
    let _: i64 = redis::cmd("DEL")
        .arg(job.logs_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sse = app.stream(&job, &token("user_a"), Some("0-0")).await;
    sse.start().await;
    let new = app.lines(&job, 1).await;
    let ev = sse.next_non_heartbeat().await.unwrap();
    assert_eq!((ev.event.as_str(), ev.id.unwrap()), ("log", new[0].clone()));
}

#[tokio::test]
async fn other_users_stream_is_404() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let sse = app.stream(&job, &token("user_b"), None).await;
    assert_eq!(sse.status, 404);
}

#[tokio::test]
async fn many_viewers_see_identical_sequences() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let mut viewers = Vec::new();
    for _ in 0..20 {
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        sse.start().await;
        viewers.push(sse);
    }
    let writer = app.writer.clone();
    let j = job.clone();
    let producer = tokio::spawn(async move {
        let ids = append_lines(&writer, &j, 500, "l").await;
        writer.set_status(&j, "ready", "").await.unwrap();
        ids
    });
    // A late joiner during the burst, resuming from what it saw first.
    let mut late = app.stream(&job, &token("user_a"), Some("0-0")).await;
    late.start().await;
    viewers.push(late);
    let ids = producer.await.unwrap();
    for mut v in viewers {
        let (logs, done) = v.until_done().await;
        assert!(done.is_some());
        let got: Vec<String> = logs.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(got, ids);
        assert_eq!(texts(&logs)[0], "l0");
    }
}

#[tokio::test]
async fn embedded_store_streams_resumes_and_resets_like_redis() {
    let app = spawn_app_with(Backend::Memory, |_| {}).await;
    let memory = app.memory.clone().unwrap();
    let job = app.job("user_a", "code").await;
    let ids = app.lines(&job, 6).await;

    // Live, then resume, exactly as over Redis.
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[1])).await;
    sse.start().await;
    for id in &ids[2..] {
        assert_eq!(&sse.next_non_heartbeat().await.unwrap().id.unwrap(), id);
    }
    let more = app.lines(&job, 1).await;
    assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), more[0]);

    // A deleted entry after the resume point is a reset.
    assert!(memory.delete_entry(&job, ids[4].parse().unwrap()));
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[2])).await;
    sse.start().await;
    let reset = sse.next_within(5).await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json()["oldest_id"], ids[0].as_str());

    // A vanished stream too.
    memory.remove_stream(&job);
    let mut sse = app.stream(&job, &token("user_a"), Some(&ids[5])).await;
    sse.start().await;
    assert_eq!(
        sse.next_within(5).await.unwrap().json(),
        json!({"reason": "trimmed", "oldest_id": null})
    );

    app.writer.set_status(&job, "ready", "").await.unwrap();
    let (_, done) = sse.until_done().await;
    assert_eq!(done.unwrap().json()["status"], "ready");
}

#[tokio::test]
async fn http1_stream_is_chunked_and_the_connection_closes_after_done() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let job = app.job("user_a", "ready").await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // A plain request first: the connection is kept alive for the stream that follows.
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
        token("user_a")
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after done")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (health, stream) = raw.split_at(
        raw.find("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream")
            .expect(&raw),
    );
    assert!(
        health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("ok\n"),
        "{health}"
    );
    let (head, body) = stream.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    for header in [
        "transfer-encoding: chunked",
        "connection: close",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "date: ",
    ] {
        assert!(head.contains(header), "{header} in {head}");
    }
    // Chunked framing: size lines in hex, each chunk's bytes, then the last chunk.
    let mut rest = body;
    let mut events = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect(body);
        let size = usize::from_str_radix(size, 16).expect(size);
        if size == 0 {
            assert_eq!(after, "\r\n", "nothing after the last chunk");
            break;
        }
        events.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n");
        rest = &after[size + 2..];
    }
    assert!(events.starts_with("retry: "), "{events}");
    assert!(events.contains("event: start\n"), "{events}");
    assert!(
        events.ends_with("event: done\ndata: {\"status\":\"ready\"}\n\n"),
        "{events}"
    );
}

/// A heartbeat goes only when nothing else was sent for the interval: lines written to the
/// connection by the feed itself count as sent, though the stream's own task never saw them.
#[tokio::test]
async fn no_heartbeat_while_lines_flow() {
    let app = spawn_app_with(Backend::Redis, |c| c.heartbeat_secs = 1).await;
    let job = app.job("user_a", "code").await;
    let mut sse = app.stream(&job, &token("user_a"), None).await;
    sse.start().await;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    for i in 0..12 {
        tick.tick().await;
        app.writer
            .append(&job, Source::Stdout, "build", &format!("line {i}"))
            .await
            .unwrap();
        let ev = sse.next_within(3).await.unwrap();
        assert_eq!(ev.event, "log", "only lines while they flow: {ev:?}");
        assert_eq!(ev.json()["text"], format!("line {i}"));
    }
    // Once they stop, heartbeats resume.
    assert_eq!(sse.next_within(3).await.unwrap().event, "heartbeat");
}
