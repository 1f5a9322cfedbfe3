//! `buildlogs serve --dev`, as a newcomer runs it: the real binary, its printed token and curl
//! command, the demo job streamed to `done`, its history, and SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::helpers::*;

struct DevServer {
    child: Child,
    token: String,
    stream_url: String,
    history_url: String,
    raw_url: String,
    search_url: String,
    output: Vec<String>,
}

fn start_dev(extra_env: &[(&str, &str)]) -> DevServer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_buildlogs"));
    cmd.args(["serve", "--dev"])
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DEV_DEMO_SECS", "2")
        .env("DEV_JOB_EVERY_SECS", "3600")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for var in [
        "CLERK_PUBLISHABLE_KEY",
        "CLERK_JWT_KEY",
        "CLERK_JWKS_URL",
        "CLERK_ISSUER",
        "REDIS_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    let (mut token, mut stream_url, mut history_url) = (None, None, None);
    let (mut raw_url, mut search_url) = (None, None);
    while search_url.is_none() {
        let line = lines
            .next()
            .expect("dev mode printed its commands")
            .unwrap();
        if let Some(t) = line.strip_prefix("TOKEN=") {
            token = Some(t.to_owned());
        }
        let url = || {
            line.split_whitespace()
                .last()
                .map(|u| u.trim_matches('"').to_owned())
        };
        if line.starts_with("curl -N ") {
            stream_url = url();
        } else if line.starts_with("curl ") && line.contains("/logs/raw") {
            raw_url = url();
        } else if line.starts_with("curl ") && line.contains("/logs/search") {
            search_url = url();
        } else if line.starts_with("curl ") {
            history_url = url();
        }
        output.push(line);
    }
    std::thread::spawn(move || for _ in lines {});
    DevServer {
        child,
        token: token.expect("a printed token"),
        stream_url: stream_url.expect("a printed curl -N command"),
        history_url: history_url.expect("a printed history command"),
        raw_url: raw_url.expect("a printed download command"),
        search_url: search_url.expect("a printed search command"),
        output,
    }
}

fn sigterm(child: &mut Child) -> Duration {
    let started = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    started.elapsed()
}

#[tokio::test]
async fn dev_mode_end_to_end() {
    let mut dev = start_dev(&[]);
    let text = dev.output.join("\n");
    assert!(
        text.contains("/docs") && text.contains("Authorize"),
        "{text}"
    );
    assert!(text.contains("expires"), "token expiry printed: {text}");
    assert!(
        dev.stream_url.ends_with("/api/jobs/demo-1/logs/stream"),
        "{}",
        dev.stream_url
    );

    let http = reqwest::Client::new();
    // Follow the printed command: live from now until done.
    let resp = http
        .get(&dev.stream_url)
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = SseClient::new(resp);
    let start = sse.start().await;
    let (live, done) = sse.until_done().await;
    assert_eq!(done.unwrap().json()["status"], "ready");

    // Everything again from the beginning, then compare with history.
    let resp = http
        .get(&dev.stream_url)
        .bearer_auth(&dev.token)
        .header("Last-Event-ID", "0-0")
        .send()
        .await
        .unwrap();
    let mut sse = SseClient::new(resp);
    sse.start().await;
    let (all, done) = sse.until_done().await;
    assert!(done.is_some());
    assert!(
        all.len() >= 20,
        "a realistic amount of output: {}",
        all.len()
    );
    let phases: std::collections::BTreeSet<String> = all
        .iter()
        .map(|e| e.json()["phase"].as_str().unwrap().to_owned())
        .collect();
    for phase in ["install", "build", "test"] {
        assert!(phases.contains(phase), "{phases:?}");
    }
    let sources: std::collections::BTreeSet<String> = all
        .iter()
        .map(|e| e.json()["source"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        sources.contains("stdout") && sources.contains("stderr"),
        "{sources:?}"
    );
    let start_id: buildlogs::ids::StreamId = start.id.unwrap().parse().unwrap();
    let tail: Vec<&SseEvent> = all
        .iter()
        .filter(|e| {
            e.id.as_deref()
                .unwrap()
                .parse::<buildlogs::ids::StreamId>()
                .unwrap()
                > start_id
        })
        .collect();
    assert_eq!(
        live.iter().map(|e| &e.id).collect::<Vec<_>>(),
        tail.iter().map(|e| &e.id).collect::<Vec<_>>()
    );

    let history_url = dev.history_url.replace("limit=20", "limit=500");
    let page: Value = http
        .get(&history_url)
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let streamed: Vec<String> = all.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(page_ids(&page), streamed);

    // The printed download: every line, colours stripped; the printed search: the failed test.
    let text = http
        .get(&dev.raw_url)
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), all.len());
    assert!(!text.contains('\x1b'), "stripped: {text}");
    assert!(
        all.iter()
            .any(|e| e.json()["text"].as_str().unwrap().contains("\x1b[")),
        "the demo's output has colours"
    );
    let found: Value = http
        .get(&dev.search_url)
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let matches = found["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "one failing test: {found}");
    assert!(
        text.contains(&buildlogs::ansi::strip(matches[0]["text"].as_str().unwrap()).into_owned())
    );

    // Another user's token is not accepted: the dev key signs only what dev mode prints.
    let resp = http
        .get(&dev.history_url)
        .bearer_auth(token("user_dev"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert!(sigterm(&mut dev.child) < Duration::from_secs(10));
}

#[tokio::test]
async fn dev_mode_writes_the_runner_format_into_redis() {
    let redis = RedisServer::start();
    let mut dev = start_dev(&[("REDIS_URL", &redis.url())]);
    let http = reqwest::Client::new();
    let resp = http
        .get(&dev.stream_url)
        .bearer_auth(&dev.token)
        .header("Last-Event-ID", "0-0")
        .send()
        .await
        .unwrap();
    let mut sse = SseClient::new(resp);
    sse.start().await;
    let (lines, done) = sse.until_done().await;
    assert!(done.is_some() && !lines.is_empty());

    let mut conn = redis.conn().await;
    let record: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("job:demo-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    for field in [
        "user_id",
        "status",
        "status_message",
        "created_at",
        "updated_at",
        "project_id",
        "tier",
        "goal",
    ] {
        assert!(
            record.contains_key(field),
            "job hash has {field}: {record:?}"
        );
    }
    assert_eq!(record["user_id"], "user_dev");
    assert_eq!(record["status"], "ready");
    let ttl: i64 = redis::cmd("TTL")
        .arg("job:demo-1:logs")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 23 * 3600, "24 h expiry on the stream: {ttl}");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("job:demo-1:logs")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields: Vec<&str> = entries[0].1.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(fields, ["ts", "source", "text", "phase"]);
    assert!(sigterm(&mut dev.child) < Duration::from_secs(10));
}

#[test]
fn dev_mode_refuses_a_clerk_key_and_serve_refuses_no_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .args(["serve", "--dev"])
        .env(
            "CLERK_PUBLISHABLE_KEY",
            "pk_test_Y2xlcmsuZXhhbXBsZS50ZXN0JA",
        )
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dev") && err.contains("CLERK_PUBLISHABLE_KEY"),
        "{err}"
    );

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_buildlogs"));
    cmd.args(["serve"]).env("LISTEN_ADDR", "127.0.0.1:0");
    for var in ["CLERK_PUBLISHABLE_KEY", "CLERK_JWT_KEY", "CLERK_JWKS_URL"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CLERK_PUBLISHABLE_KEY") && err.contains("--dev"),
        "{err}"
    );
}

#[test]
fn openapi_command_prints_the_committed_spec() {
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "`buildlogs openapi` differs from openapi/openapi.json"
    );
}

#[test]
fn help_documents_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "LISTEN_ADDR",
        "REDIS_URL",
        "REDIS_POOL_SIZE",
        "CLERK_PUBLISHABLE_KEY",
        "CLERK_JWT_KEY",
        "CLERK_JWKS_URL",
        "CLERK_ISSUER",
        "CLERK_AUTHORIZED_PARTIES",
        "HEARTBEAT_SECS",
        "MAX_STREAMS_PER_USER",
        "MAX_STREAMS",
        "CORS_ALLOWED_ORIGINS",
        "RUST_LOG",
        "--dev",
    ] {
        assert!(help.contains(var), "--help mentions {var}");
    }
}

#[tokio::test]
async fn dev_mode_serves_the_example_viewer_and_its_token() {
    let mut dev = start_dev(&[]);
    let text = dev.output.join("\n");
    let viewer = text
        .lines()
        .find_map(|l| l.strip_prefix("Viewer: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the banner prints the viewer's URL: {text}"))
        .to_owned();
    assert!(viewer.ends_with("/viewer/?job=demo-1"), "{viewer}");
    let base = viewer.trim_end_matches("/viewer/?job=demo-1");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The page and its script: the committed build, byte for byte, under a strict CSP.
    let page = http.get(&viewer).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(
        page.bytes().await.unwrap().as_ref(),
        include_bytes!("../../assets/viewer/index.html")
    );
    let script = http
        .get(format!("{base}/viewer/viewer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        script.bytes().await.unwrap().as_ref(),
        include_bytes!("../../assets/viewer/viewer.js")
    );
    // Without its slash, `./viewer.js` would resolve against `/`: redirected, query kept.
    let bare = http
        .get(format!("{base}/viewer?job=demo-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/viewer/?job=demo-1");

    // Its token: a 60 s session token for the demo user that the API accepts.
    let resp = http
        .get(format!("{base}/viewer/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    let expires_at = body["expires_at"].as_u64().unwrap();
    assert!(
        expires_at <= now() + 61 && expires_at >= now() + 55,
        "{body}"
    );
    let history = http
        .get(format!("{base}/api/jobs/demo-1/logs?limit=5"))
        .bearer_auth(body["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    assert!(sigterm(&mut dev.child) < Duration::from_secs(10));
}

#[tokio::test]
async fn the_viewer_and_its_token_exist_only_in_dev_mode() {
    let app = spawn_app().await;
    for path in ["/viewer/", "/viewer", "/viewer/viewer.js", "/viewer/token"] {
        let resp = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}
