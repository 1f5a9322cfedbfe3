//! The whole log: `GET /api/jobs/{job_id}/logs/raw` (download) and `…/logs/search`.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::Duration,
};

use buildlogs::ids::JobId;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const TS: &str = "2026-11-24T03:05:57.123456+00:00";

/// Lines with colour codes, a hyperlink and a title, as other writers than the runner write.
const ANSI_LINES: [&str; 5] = [
    "\x1b[1m\x1b[32m   Compiling\x1b[0m buildlogs v0.1.0",
    "see \x1b]8;;https://example.com/docs?a=1\x1b\\the docs\x1b]8;;\x1b\\ for more",
    "\x1b]0;cargo test\x07running 3 tests",
    "test parse::bad ... \x1b[31mFAILED\x1b[0m ✗ ü",
    "",
];
const STRIPPED: [&str; 5] = [
    "   Compiling buildlogs v0.1.0",
    "see the docs for more",
    "running 3 tests",
    "test parse::bad ... FAILED ✗ ü",
    "",
];

async fn write_ansi_lines(app: &TestApp, job: &JobId) -> Vec<String> {
    let mut ids = Vec::new();
    for text in ANSI_LINES {
        let id = app
            .writer
            .append_fields(
                job,
                &[
                    ("ts", TS),
                    ("source", "stdout"),
                    ("text", text),
                    ("phase", "test"),
                ],
            )
            .await
            .unwrap();
        ids.push(id.to_string());
    }
    ids
}

async fn download(app: &TestApp, job: &JobId, query: &str, user: &str) -> reqwest::Response {
    app.get_as(user, &format!("/api/jobs/{job}/logs/raw{query}"))
        .await
}

#[tokio::test]
async fn a_download_is_the_exact_text_with_ansi_kept_or_stripped_and_optional_timestamps() {
    let app = spawn_app().await;
    let job = app.job("user_a", "failed").await;
    let ids = write_ansi_lines(&app, &job).await;
    let joined = |lines: &[&str], ts: bool| -> String {
        lines
            .iter()
            .map(|l| {
                if ts {
                    format!("{TS} {l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    };
    for (query, expected) in [
        ("", joined(&ANSI_LINES, false)),
        ("?ansi=keep", joined(&ANSI_LINES, false)),
        ("?ansi=strip", joined(&STRIPPED, false)),
        ("?timestamps=true", joined(&ANSI_LINES, true)),
        ("?ansi=strip&timestamps=true", joined(&STRIPPED, true)),
        ("?ansi=strip&timestamps=false", joined(&STRIPPED, false)),
    ] {
        let resp = download(&app, &job, query, "user_a").await;
        assert_eq!(resp.status(), 200, "{query}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            headers["content-disposition"],
            format!("attachment; filename=\"{job}.log\"").as_str()
        );
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["buildlogs-last-id"], ids[4].as_str());
        assert!(headers.get("buildlogs-truncated").is_none());
        assert_eq!(resp.text().await.unwrap(), expected, "{query}");
    }
}

#[tokio::test]
async fn a_download_is_a_snapshot_and_says_when_its_start_was_trimmed() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    let writer = app.writer.clone().with_maxlen(10);
    let mut last = String::new();
    for i in 0..300 {
        last = writer
            .append(
                &job,
                buildlogs::runner_format::Source::Stdout,
                "build",
                &format!("l{i}"),
            )
            .await
            .unwrap()
            .to_string();
    }
    let resp = download(&app, &job, "", "user_a").await;
    assert_eq!(resp.headers()["buildlogs-last-id"], last.as_str());
    assert_eq!(resp.headers()["buildlogs-truncated"], "true");
    // Lines appended after the request was accepted are not in it.
    app.lines(&job, 5).await;
    let body = resp.text().await.unwrap();
    assert!(body.ends_with("l299\n"), "{body}");
    assert!(!body.contains("line "), "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines.len() >= 10 && lines.len() < 300, "{}", lines.len());
}

#[tokio::test]
async fn a_download_of_no_stream_is_empty_and_bad_parameters_are_400() {
    let app = spawn_app().await;
    let job = app.job("user_a", "queued").await;
    let resp = download(&app, &job, "", "user_a").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("buildlogs-last-id").is_none());
    assert_eq!(resp.text().await.unwrap(), "");
    for bad in [
        "ansi=none",
        "ansi=",
        "ansi=STRIP",
        "timestamps=yes",
        "timestamps=1",
        "timestamps=",
    ] {
        let resp = download(&app, &job, &format!("?{bad}"), "user_a").await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_query", "{bad}");
    }
    // Others' jobs and missing ones are the same 404; anonymous is 401 first.
    app.lines(&job, 2).await;
    for (user, job) in [("user_b", job.as_str()), ("user_a", "no-such-job")] {
        let resp = download(&app, &JobId::parse(job).unwrap(), "?ansi=strip", user).await;
        assert_eq!(resp.status(), 404);
    }
    let resp = app
        .http
        .get(app.url(&format!("/api/jobs/{job}/logs/raw?ansi=bad")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = download(&app, &job, "", "user_a").await;
    assert_eq!(resp.status(), 200);
    let resp = app.get_as("user_a", "/api/jobs/a%3Ab/logs/raw").await;
    assert_eq!(resp.status(), 400);
}

/// Appends `n` lines `{prefix}{i}` straight to Redis in pipelined batches; every `every`th
/// line (when set) gets `needle` in the middle of a colour code.
async fn fill(app: &TestApp, job: &JobId, n: usize, every: Option<usize>) {
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    for start in (0..n).step_by(5000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 5000).min(n) {
            let text = match every {
                Some(every) if i % every == 0 => {
                    format!("line {i} has a ne\x1b[1medl\x1b[0me here")
                }
                _ => format!("line {i} of the build output, about as long as a usual one"),
            };
            pipe.cmd("XADD")
                .arg(job.logs_key())
                .arg("*")
                .arg("ts")
                .arg(TS)
                .arg("source")
                .arg("stdout")
                .arg("text")
                .arg(text)
                .arg("phase")
                .arg("build")
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
}

/// A download request from a client whose receive buffer is tiny and that reads nothing.
async fn stalled_download(app: &TestApp, job: &JobId) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(app.addr).await.unwrap();
    let req = format!(
        "GET /api/jobs/{job}/logs/raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token("user_a")
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    tcp
}

#[tokio::test]
async fn a_download_in_progress_holds_a_slot_and_an_abandoned_one_frees_it() {
    let app = spawn_app_with(Backend::Redis, |c| c.max_streams_per_user = 1).await;
    let job = app.job("user_a", "ready").await;
    // 8 MB: more than the sockets' buffers hold, so the download stays in progress.
    fill(&app, &job, 120_000, None).await;
    let held = stalled_download(&app, &job).await;
    app.await_metric("buildlogs_open_streams", 1.0).await;

    let resp = download(&app, &job, "", "user_a").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");
    assert_eq!(app.metric("buildlogs_streams_rejected_total").await, 1.0);
    // An event stream counts against the same cap.
    let sse = app.stream(&job, &token("user_a"), Some("0-0")).await;
    assert_eq!(sse.status, 429);
    drop(sse);

    // The client goes: its download's reads stop and its slot comes back.
    drop(held);
    app.await_metric("buildlogs_open_streams", 0.0).await;
    let resp = download(&app, &job, "", "user_a").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().lines().count(), 120_000);
    app.await_metric("buildlogs_open_streams", 0.0).await;
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_cut_by_the_stall_limit() {
    let stall = Duration::from_secs(2);
    let app = spawn_app_with(Backend::Redis, |c| {
        c.max_streams_per_user = 1;
        c.stream_stall_secs = stall.as_secs();
    })
    .await;
    let job = app.job("user_a", "ready").await;
    fill(&app, &job, 120_000, None).await;
    let started = std::time::Instant::now();
    let _held = stalled_download(&app, &job).await;
    app.await_metric("buildlogs_open_streams", 1.0).await;
    // The client stays connected and reads nothing: the connection is closed once the socket
    // has taken nothing for the stall limit, and the download's slot comes back.
    tokio::time::timeout(
        stall + Duration::from_secs(5),
        app.await_metric("buildlogs_open_streams", 0.0),
    )
    .await
    .expect("the stalled download still holds its slot");
    assert!(started.elapsed() >= stall, "{:?}", started.elapsed());
    let resp = download(&app, &job, "", "user_a").await;
    assert_eq!(resp.status(), 200);
}

/// The service as a process of its own, so that its resident memory is its own.
struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    async fn start(redis_url: &str) -> Self {
        let port = buildlogs_test_support::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
            .arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis_url)
            .env("CLERK_JWT_KEY", &keys().public_pem)
            .env("RUST_LOG", "warn")
            .env_remove("CLERK_PUBLISHABLE_KEY")
            .env_remove("CLERK_JWKS_URL")
            .env_remove("CLERK_ISSUER")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the server did not come up");
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_300000_line_download_to_a_slow_reader_keeps_the_servers_memory_flat() {
    let app = spawn_app().await;
    let job = app.job("user_a", "ready").await;
    fill(&app, &job, 300_000, None).await;
    let server = ServerProcess::start(&app.redis.as_ref().unwrap().url()).await;
    let http = reqwest::Client::new();
    // Warm up: a page of history, so that the baseline has its pools and buffers.
    let resp = http
        .get(format!("{}/api/jobs/{job}/logs", server.base))
        .bearer_auth(token("user_a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let baseline = server.rss_kib();

    let mut resp = http
        .get(format!(
            "{}/api/jobs/{job}/logs/raw?timestamps=true",
            server.base
        ))
        .bearer_auth(token("user_a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut bytes, mut lines, mut peak, mut samples) = (0usize, 0usize, baseline, 0);
    let mut tail = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
        tail = chunk.to_vec();
        // A slow reader: the server's writes wait on it throughout.
        if lines % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peak = peak.max(server.rss_kib());
        samples += 1;
    }
    assert_eq!(lines, 300_000);
    assert!(bytes > 25_000_000, "{bytes}");
    assert!(
        String::from_utf8_lossy(&tail)
            .ends_with("line 299999 of the build output, about as long as a usual one\n")
    );
    assert!(samples > 100, "sampled throughout: {samples}");
    let rise_mib = (peak - baseline) as f64 / 1024.0;
    assert!(
        rise_mib < 32.0,
        "the server's RSS rose by {rise_mib:.1} MiB"
    );
}

async fn search(app: &TestApp, job: &JobId, query: &str) -> (u16, Value) {
    let resp = app
        .get_as("user_a", &format!("/api/jobs/{job}/logs/search?{query}"))
        .await;
    let status = resp.status().as_u16();
    if status == 200 {
        assert_eq!(resp.headers()["cache-control"], "no-store");
    }
    (status, resp.json().await.unwrap())
}

fn match_texts(page: &Value) -> Vec<String> {
    page["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_sees_through_colour_codes_and_takes_patterns() {
    let app = spawn_app().await;
    let job = app.job("user_a", "failed").await;
    let ids = write_ansi_lines(&app, &job).await;
    let (status, page) = search(&app, &job, "q=failed").await;
    assert_eq!(status, 200);
    assert_eq!(
        match_texts(&page),
        [ANSI_LINES[3]],
        "matches keep their text as written"
    );
    assert_eq!(page["matches"][0]["id"], ids[3].as_str());
    assert_eq!(page["scanned_to"], ids[4].as_str());
    assert_eq!(page["has_more"], false);
    // A colour code inside the word, a hyperlink's text, a case-sensitive miss.
    assert_eq!(
        match_texts(&search(&app, &job, "q=Compiling%20buildlogs").await.1).len(),
        1
    );
    assert_eq!(
        match_texts(&search(&app, &job, "q=the%20docs%20for").await.1).len(),
        1
    );
    assert_eq!(
        match_texts(&search(&app, &job, "q=https").await.1).len(),
        0,
        "a link's target is not text"
    );
    assert_eq!(
        match_texts(&search(&app, &job, "q=failed&case_sensitive=true").await.1).len(),
        0
    );
    assert_eq!(
        match_texts(&search(&app, &job, "q=%C3%9C").await.1).len(),
        1,
        "Unicode case folding"
    );
    let (_, page) = search(&app, &job, "q=%5E(running%7Csee)%20&regex=true").await;
    assert_eq!(match_texts(&page), [ANSI_LINES[1], ANSI_LINES[2]]);
    // Paging from a position.
    let (_, page) = search(&app, &job, &format!("q=e&after_id={}&limit=1", ids[0])).await;
    assert_eq!(page["matches"][0]["id"], ids[1].as_str());
    assert_eq!(
        (&page["scanned_to"], &page["has_more"]),
        (&ids[1].as_str().into(), &true.into())
    );
    let (_, page) = search(&app, &job, &format!("q=e&after_id={}", ids[4])).await;
    assert_eq!(
        page,
        serde_json::json!({"matches": [], "scanned_to": null, "has_more": false})
    );
}

#[tokio::test]
async fn bad_searches_are_400_invalid_query() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    app.lines(&job, 2).await;
    let long = "x".repeat(257);
    for (query, code) in [
        ("", "invalid_query"),
        ("q=", "invalid_query"),
        (&*format!("q={long}"), "invalid_query"),
        ("q=a(b&regex=true", "invalid_query"),
        // Compiles past the size limit.
        ("q=%5Cw%7B1000%7D&regex=true", "invalid_query"),
        ("q=a&regex=maybe", "invalid_query"),
        ("q=a&case_sensitive=1", "invalid_query"),
        ("q=a&after_id=12", "invalid_cursor"),
        ("q=a&limit=0", "invalid_limit"),
        ("q=a&limit=501", "invalid_limit"),
    ] {
        let (status, body) = search(&app, &job, query).await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (400, code),
            "{query}: {body}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(!detail.contains("regex::"), "{detail}");
    }
    let (status, body) = search(&app, &JobId::parse("nobody").unwrap(), "q=a").await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (404, "job_not_found")
    );
    let empty = app.job("user_a", "queued").await;
    assert_eq!(
        search(&app, &empty, "q=a").await.1,
        serde_json::json!({"matches": [], "scanned_to": null, "has_more": false})
    );
}

#[tokio::test]
async fn search_across_250000_lines_in_pages_reports_every_match_once() {
    let app = spawn_app().await;
    let job = app.job("user_a", "ready").await;
    fill(&app, &job, 250_000, Some(997)).await;
    let expected: Vec<String> = (0..250_000)
        .filter(|i| i % 997 == 0)
        .map(|i| format!("line {i} has a ne\x1b[1medl\x1b[0me here"))
        .collect();
    let mut found: Vec<String> = Vec::new();
    let mut ids = HashSet::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = "q=NEEDLE&limit=40".to_owned();
        if let Some(a) = &after {
            query.push_str(&format!("&after_id={a}"));
        }
        let (status, page) = search(&app, &job, &query).await;
        assert_eq!(status, 200);
        pages += 1;
        for m in page["matches"].as_array().unwrap() {
            assert!(
                ids.insert(m["id"].as_str().unwrap().to_owned()),
                "reported twice: {m}"
            );
        }
        found.extend(match_texts(&page));
        if page["has_more"] == false {
            break;
        }
        after = Some(page["scanned_to"].as_str().unwrap().to_owned());
    }
    assert_eq!(found, expected);
    // 252 matches, 40 a page; and no page examines more than 100,000 lines.
    assert!(pages >= 7, "{pages}");
}
