//! Findings of the black-box probe (issue 17), each on the wire where it lives: idle and slow
//! connections on both protocols, head sizes, page sizes, cache and CORS headers, owner changes,
//! strict edge cases, and the private metrics listener.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: 9-byte header and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads until the server closes the connection, returning what came and when it closed.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The frame types in a stream of HTTP/2 frames from the server.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

const GOAWAY: u8 = 7;

#[tokio::test]
async fn idle_http2_connections_get_goaway_and_close() {
    let app = spawn_app_with(Backend::Memory, |c| c.idle_timeout_secs = 2).await;
    // The preface and an empty SETTINGS, then nothing.
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(&h2_frame(4, 0, 0, &[])).await.unwrap();
    let (got, after) = until_closed(&mut tcp, Duration::from_secs(6)).await;
    assert!(
        after >= Duration::from_millis(1900),
        "not before the idle timeout: {after:?}"
    );
    assert!(
        frame_types(&got).contains(&GOAWAY),
        "a GOAWAY first: {:?}",
        frame_types(&got)
    );

    // A header block that never ends (HEADERS without END_HEADERS, no CONTINUATION).
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(&h2_frame(4, 0, 0, &[])).await.unwrap();
    // :method GET (indexed 2), END_STREAM only.
    tcp.write_all(&h2_frame(1, 0x1, 1, &[0x82])).await.unwrap();
    let (_, after) = until_closed(&mut tcp, Duration::from_secs(6)).await;
    assert!(after < Duration::from_secs(6));
}

#[tokio::test]
async fn an_http2_connection_with_a_request_in_flight_is_not_idle() {
    let app = spawn_app_with(Backend::Memory, |c| {
        c.idle_timeout_secs = 1;
        c.heartbeat_secs = 1;
    })
    .await;
    let job = app.job("user_a", "code").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(app.url(&format!("/api/jobs/{job}/logs/stream")))
        .bearer_auth(token("user_a"))
        .send()
        .await
        .unwrap();
    let mut sse = SseClient::new(resp);
    sse.start().await;
    // Well past the idle timeout, the stream goes on (heartbeats), then lines arrive.
    for _ in 0..3 {
        assert_eq!(sse.next_within(5).await.unwrap().event, "heartbeat");
    }
    let line = app.lines(&job, 1).await;
    assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), line[0]);
}

#[tokio::test]
async fn slow_and_oversized_heads_are_refused() {
    let app = spawn_app_with(Backend::Memory, |c| c.idle_timeout_secs = 2).await;
    // A head that never finishes: closed at the timeout.
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, after) = until_closed(&mut tcp, Duration::from_secs(6)).await;
    assert!(after >= Duration::from_millis(1900), "{after:?}");

    // A head over 64 KiB: 431, whatever else it says.
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70 * 1024)
    );
    let _ = tcp.write_all(big.as_bytes()).await;
    let (got, _) = until_closed(&mut tcp, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    // A header list over 64 KiB on HTTP/2: not served.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(app.url("/healthz"))
        .header("x-big", "b".repeat(70 * 1024))
        .send()
        .await;
    match resp {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 431),
        Err(err) => assert!(!err.is_timeout(), "refused, not hung: {err}"),
    }
    // A head under the bound is fine.
    let resp = h2
        .get(app.url("/healthz"))
        .header("x-fine", "f".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn history_pages_of_long_lines_stay_under_a_mebibyte_and_visit_every_line_once() {
    let app = spawn_app().await;
    let job = app.job("user_a", "code").await;
    // Lines no runner would write (other writers exist), straight to Redis: 100 KB each,
    // mostly characters JSON must escape, between ordinary lines; then one of 3 MB.
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let long = "\"\\\n\u{1}".repeat(100 * 1024 / 4);
    let mut ids = Vec::new();
    for i in 0..24 {
        if i % 3 == 0 {
            ids.extend(app.lines(&job, 1).await);
        }
        let id: String = redis::cmd("XADD")
            .arg(job.logs_key())
            .arg("*")
            .arg("ts")
            .arg("2026-11-24T03:05:57.123456+00:00")
            .arg("text")
            .arg(format!("{i}{long}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        ids.push(id);
    }
    let huge: String = redis::cmd("XADD")
        .arg(job.logs_key())
        .arg("*")
        .arg("text")
        .arg("h".repeat(3 * 1024 * 1024))
        .query_async(&mut conn)
        .await
        .unwrap();
    ids.push(huge);
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("/api/jobs/{job}/logs?limit=500");
        if let Some(b) = &before {
            url.push_str(&format!("&before_id={b}"));
        }
        let resp = app.get_as("user_a", &url).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body = resp.bytes().await.unwrap();
        let page: Value = serde_json::from_slice(&body).unwrap();
        let page_ids = page_ids(&page);
        assert!(!page_ids.is_empty(), "at least one line per page");
        if page_ids.len() > 1 {
            assert!(body.len() < 1024 * 1024, "page of {} bytes", body.len());
        }
        assert_eq!(page["oldest_id"], page_ids[0].as_str());
        seen.splice(0..0, page_ids);
        pages += 1;
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        before = page["oldest_id"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids, "every line exactly once, in order");
    assert!(pages >= 4, "long lines split the pages ({pages})");
}

#[tokio::test]
async fn cors_vary_and_refusals_served_as_if_cors_were_off() {
    let app = spawn_app_with(Backend::Memory, |c| {
        c.cors_allowed_origins = vec!["http://localhost:5173".into()];
    })
    .await;
    let job = app.job("user_a", "code").await;
    let path = format!("/api/jobs/{job}/logs");
    let get = |origin: Option<&'static str>, auth: bool| {
        let mut req = app.http.get(app.url(&path));
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        if auth {
            req = req.bearer_auth(token("user_a"));
        }
        req.send()
    };
    for (origin, auth) in [
        (Some("http://evil.test"), true),
        (Some("http://evil.test"), false),
    ] {
        let resp = get(origin, auth).await.unwrap();
        // Served exactly as without CORS (200, or the 401 an anonymous caller gets).
        assert_eq!(resp.status(), if auth { 200 } else { 401 });
        assert!(
            !resp
                .headers()
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{:?}",
            resp.headers()
        );
        assert_eq!(resp.headers()["vary"], "Origin");
    }
    // A preflight from an origin not listed is not an error either.
    let resp = app
        .http
        .request(reqwest::Method::OPTIONS, app.url(&path))
        .header("Origin", "http://evil.test")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 400);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // The listed origin: CORS headers, and Vary on every response (with or without Origin).
    let resp = get(Some("http://localhost:5173"), true).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "retry-after, content-disposition, buildlogs-last-id, buildlogs-truncated"
    );
    assert_eq!(resp.headers()["vary"], "Origin");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let resp = get(None, true).await.unwrap();
    assert_eq!(resp.headers()["vary"], "Origin");
    // An error a browser must be able to read carries them too.
    let resp = get(Some("http://localhost:5173"), false).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
}

#[tokio::test]
async fn cors_matches_origins_byte_for_byte_and_only_on_the_api() {
    let listed = "http://localhost:5173";
    let app = spawn_app_with(Backend::Memory, |c| {
        c.cors_allowed_origins = vec![listed.into()];
    })
    .await;
    let job = app.job("user_a", "code").await;
    let cors_headers = |resp: &reqwest::Response| -> Vec<String> {
        resp.headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k.starts_with("access-control-"))
            .collect()
    };
    let api = app.url(&format!("/api/jobs/{job}/logs"));
    let get = |url: String, origin: &str| {
        app.http
            .get(url)
            .header("Origin", origin.to_owned())
            .bearer_auth(token("user_a"))
            .send()
    };
    let resp = get(api.clone(), listed).await.unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], listed);
    // Near misses are other origins: a trailing slash, another case, a port, a suffix.
    // (Blanks around a header value are not part of it: HTTP strips them.)
    for origin in [
        "http://localhost:5173/",
        "HTTP://localhost:5173",
        "http://localhost:51734",
        "http://localhost:5173.evil.test",
    ] {
        let resp = get(api.clone(), origin).await.unwrap();
        assert_eq!(resp.status(), 200, "{origin:?}");
        assert!(
            cors_headers(&resp).is_empty(),
            "{origin:?}: {:?}",
            resp.headers()
        );
    }
    // Outside /api: never, not even for the listed origin, nor for its preflights.
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/apix",
    ] {
        let resp = get(app.url(path), listed).await.unwrap();
        assert!(
            cors_headers(&resp).is_empty(),
            "{path}: {:?}",
            resp.headers()
        );
        let resp = app
            .http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", listed)
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await
            .unwrap();
        assert!(
            cors_headers(&resp).is_empty(),
            "preflight {path}: {:?}",
            resp.headers()
        );
    }
    // The API's preflight is still answered.
    let resp = app
        .http
        .request(reqwest::Method::OPTIONS, api)
        .header("Origin", listed)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], listed);
}

#[tokio::test]
async fn every_error_and_every_204_says_no_store() {
    let mut app = spawn_app_with(Backend::Redis, |c| c.max_streams_per_user = 1).await;
    let job = app.job("user_a", "code").await;
    let done = app.job("user_a", "ready").await;
    let last = app.lines(&done, 1).await.pop().unwrap();
    let mut open = app.stream(&job, &token("user_a"), None).await;
    open.start().await;
    let (http, base) = (app.http.clone(), app.base.clone());
    let get = |path: String, token: Option<String>, last_event_id: Option<&str>| {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_owned());
        }
        req.send()
    };
    let history = format!("/api/jobs/{job}/logs");
    let stream = format!("/api/jobs/{job}/logs/stream");
    let cases = [
        (get(history.clone(), None, None).await, 401),
        (
            get("/api/jobs/a:b/logs".into(), Some(token("user_a")), None).await,
            400,
        ),
        (
            get(format!("{history}?limit=0"), Some(token("user_a")), None).await,
            400,
        ),
        (
            get(stream.clone(), Some(token("user_a")), Some("x")).await,
            400,
        ),
        (get(history.clone(), Some(token("user_b")), None).await, 404),
        (get(stream.clone(), Some(token("user_b")), None).await, 404),
        (
            get("/api/nothing".into(), Some(token("user_a")), None).await,
            404,
        ),
        (get(stream.clone(), Some(token("user_a")), None).await, 429),
        (
            get(
                format!("/api/jobs/{done}/logs/stream"),
                Some(token("user_a")),
                Some(&last),
            )
            .await,
            204,
        ),
    ];
    for (resp, status) in cases {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), status, "{:?}", resp.url());
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{status} {}: {:?}",
            resp.url(),
            resp.headers()
        );
    }
    drop(open);
    app.redis.as_mut().unwrap().kill();
    for path in [history.as_str(), "/readyz"] {
        let resp = get(path.into(), Some(token("user_a")), None).await.unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
    }
}

/// HTTP/1 clients that ask for `/docs` (1.6 MB) five times over and never read (more than
/// the kernel's buffers take): each connection is closed once hyper's write has been blocked
/// for the stall limit, and the server's descriptors come back.
#[tokio::test]
async fn http1_clients_that_never_read_a_response_are_closed_by_the_stall_limit() {
    let server = Instance::start(None, &[("STREAM_STALL_SECS", "2")]).await;
    let fds_before = server.fds();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(server.addr).await.unwrap();
        let five = b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5);
        tcp.write_all(&five).await.unwrap();
        clients.push(tcp);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    while server.fds() < fds_before + 20 {
        assert!(Instant::now() < deadline, "every connection accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.fds_back_to(fds_before, deadline).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "not before the stall limit: {:?}",
        started.elapsed()
    );
    // Each got part of the page, then the connection's end.
    for mut tcp in clients {
        let (got, _) = until_closed(&mut tcp, Duration::from_secs(5)).await;
        assert!(got.starts_with(b"HTTP/1.1 200 OK"));
        assert!(got.len() < 5 * 1_600_000, "{} bytes", got.len());
    }
}

/// The kernel send buffer (`ss`'s `tb`) of the server's side of each established connection
/// to `port`.
fn server_send_buffers(port: u16) -> Vec<u64> {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed by scripts/setup");
    String::from_utf8_lossy(&out.stdout)
        .split("skmem:(")
        .skip(1)
        .filter_map(|sk| {
            sk.split(')')
                .next()?
                .split(',')
                .find_map(|field| field.strip_prefix("tb")?.parse().ok())
        })
        .collect()
}

#[tokio::test]
async fn a_detached_streams_kernel_send_buffer_is_bounded_unless_switched_off() {
    for configured in [32_768usize, 0] {
        let app = spawn_app_with(Backend::Memory, |c| c.stream_send_buffer = configured).await;
        let job = app.job("user_a", "code").await;
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        let req = raw_stream_get(&job, &token("user_a"));
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("event: start") {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before start");
            seen.extend_from_slice(&buf[..n]);
        }
        let buffers = server_send_buffers(app.addr.port());
        assert_eq!(buffers.len(), 1, "{buffers:?}");
        // Linux keeps twice what it is asked for.
        if configured > 0 {
            assert_eq!(buffers[0], 2 * configured as u64, "{buffers:?}");
        } else {
            assert_ne!(buffers[0], 2 * 32_768, "{buffers:?}");
        }
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_job_changes_owner_or_vanishes() {
    let app = spawn_app_with(Backend::Redis, |c| c.heartbeat_secs = 60).await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    for change in ["owner", "vanish"] {
        let job = app.job("user_a", "code").await;
        let mut sse = app.stream(&job, &token("user_a"), None).await;
        sse.start().await;
        let line = app.lines(&job, 1).await;
        assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), line[0]);
        let started = Instant::now();
        match change {
            "owner" => {
                let _: i64 = redis::cmd("HSET")
                    .arg(job.record_key())
                    .arg("user_id")
                    .arg("user_b")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            _ => {
                let _: i64 = redis::cmd("DEL")
                    .arg(job.record_key())
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
        // Lines keep coming; the stream ends within 5 s all the same.
        let writer = app.writer.clone();
        let busy_job = job.clone();
        let busy = tokio::spawn(async move {
            loop {
                append_lines(&writer, &busy_job, 1, "after ").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        loop {
            match tokio::time::timeout(Duration::from_secs(5), sse.next()).await {
                Err(_) => panic!("{change}: still open after 5 s"),
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        busy.abort();
        assert!(started.elapsed() < Duration::from_secs(5), "{change}");
        // The next connect is the 404.
        let again = app.stream(&job, &token("user_a"), None).await;
        assert_eq!(again.status, 404, "{change}");
    }
    // The new owner can follow the job.
    let job = app.job("user_a", "code").await;
    let _: i64 = redis::cmd("HSET")
        .arg(job.record_key())
        .arg("user_id")
        .arg("user_b")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sse = app.stream(&job, &token("user_b"), None).await;
    sse.start().await;
    let line = app.lines(&job, 1).await;
    assert_eq!(sse.next_non_heartbeat().await.unwrap().id.unwrap(), line[0]);
}

#[tokio::test]
async fn a_job_key_of_another_type_is_no_such_job() {
    let app = spawn_app().await;
    let mut conn = app.redis.as_ref().unwrap().conn().await;
    let job = unique_job();
    let _: () = redis::cmd("SET")
        .arg(job.record_key())
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    for path in [
        format!("/api/jobs/{job}/logs"),
        format!("/api/jobs/{job}/logs/stream"),
    ] {
        let resp = app.get_as("user_a", &path).await;
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "job_not_found");
    }
    let list = unique_job();
    let _: i64 = redis::cmd("RPUSH")
        .arg(list.record_key())
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let resp = app
        .get_as("user_a", &format!("/api/jobs/{list}/logs"))
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn metrics_on_a_private_listener_when_configured() {
    let app = spawn_app_with(Backend::Memory, |c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let private = app.metrics_base.clone().expect("a metrics listener");
    let text = app
        .http
        .get(format!("{private}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("buildlogs_open_streams"), "{text}");
    for path in ["/healthz", "/readyz"] {
        for base in [private.as_str(), app.base.as_str()] {
            let status = app
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "{base}{path}");
        }
    }
    let status = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "metrics leave the API listener");
    // The private listener serves nothing else.
    let status = app
        .http
        .get(format!("{private}/openapi.json"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}
