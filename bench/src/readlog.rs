//! The whole-log rows (contract §7): `download` (a 1,000,000-line log as text, with the
//! server's RSS rise) and `search` (the same log scanned page after page for a `q` that
//! matches one line in 1,000), each beside its floor measured in the same run: a bare redis-rs
//! client reading the same stream with `XRANGE … COUNT 1000`.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use buildlogs::dev::Signer;

use super::{Row, Server, USER, redis_conn, start_redis, xadd};

const LINES: u64 = 1_000_000;
const JOB: &str = "whole";

/// A fresh Redis holding the `whole` job: 1,000,000 lines of 100 bytes of text, every 1,000th
/// one with `needle` in it, pipelined 10,000 at a time.
async fn whole_log() -> anyhow::Result<buildlogs_test_support::RedisServer> {
    let redis = start_redis();
    let mut conn = redis_conn(&redis).await?;
    let _: i64 = redis::cmd("HSET")
        .arg(format!("job:{JOB}"))
        .arg("user_id")
        .arg(USER)
        .arg("status")
        .arg("ready")
        .query_async(&mut conn)
        .await?;
    for chunk in 0..LINES / 10_000 {
        let mut pipe = redis::pipe();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            let text = if i % 1000 == 500 {
                format!(
                    "line {i:07}: the needle, in a line of build output of the usual length, with some more words here"
                )
            } else {
                format!(
                    "line {i:07} of the build output, about as long as a typical one is, with a few more words here"
                )
            };
            pipe.add_command(xadd(JOB, text, false)).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(redis)
}

/// The floor: the whole stream read with `XRANGE … COUNT 1000` by a bare client, in seconds.
async fn bare_xrange(redis: &buildlogs_test_support::RedisServer) -> anyhow::Result<(f64, u64)> {
    let mut conn = redis_conn(redis).await?;
    let started = Instant::now();
    let mut start = "-".to_owned();
    let mut entries = 0u64;
    loop {
        let page: redis::Value = redis::cmd("XRANGE")
            .arg(format!("job:{JOB}:logs"))
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        let redis::Value::Array(items) = page else {
            anyhow::bail!("XRANGE answered {page:?}");
        };
        entries += items.len() as u64;
        let last = match items.last() {
            Some(redis::Value::Array(entry)) => match entry.first() {
                Some(redis::Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => anyhow::bail!("an entry without an id"),
            },
            _ => break,
        };
        if items.len() < 1000 {
            break;
        }
        start = format!("({last}");
    }
    Ok((started.elapsed().as_secs_f64(), entries))
}

/// How many timed rounds a row runs (each round: the server's run, then the floor's).
fn rounds(secs: u64) -> usize {
    (secs / 10).clamp(1, 5) as usize
}

pub(super) async fn download(
    bin: &PathBuf,
    keys: &(String, Signer),
    secs: u64,
) -> anyhow::Result<Row> {
    let redis = whole_log().await?;
    let server = Arc::new(Server::start(bin, &redis.url(), &keys.0, &[]).await?);
    let (token, _) = keys.1.session_token(USER, Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let url = format!("{}/api/jobs/{JOB}/logs/raw", server.base);
    // Warm up with a small request, so that the baseline has its pools.
    http.get(format!("{}/api/jobs/{JOB}/logs?limit=1", server.base))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    let baseline = server.rss_kb();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (server, peak, sampling) = (server.clone(), peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(server.rss_kb(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (mut best, mut best_bare, mut bytes, mut lines) = (f64::MAX, f64::MAX, 0, 0);
    for _ in 0..rounds(secs) {
        let started = Instant::now();
        let mut resp = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
        let (mut b, mut l) = (0usize, 0usize);
        while let Some(chunk) = resp.chunk().await? {
            b += chunk.len();
            l += chunk.iter().filter(|&&c| c == b'\n').count();
        }
        best = best.min(started.elapsed().as_secs_f64());
        (bytes, lines) = (b, l);
        let (bare, entries) = bare_xrange(&redis).await?;
        anyhow::ensure!(entries == LINES, "the floor read {entries} entries");
        best_bare = best_bare.min(bare);
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    anyhow::ensure!(lines as u64 == LINES, "the download had {lines} lines");
    let rise = peak.load(Ordering::Relaxed).saturating_sub(baseline) as f64 / 1024.0;
    Ok(Row {
        scenario: "download".into(),
        mode: "-".into(),
        load: format!(
            "1,000,000 lines ({:.0} MB of text), best of {}",
            bytes as f64 / 1e6,
            rounds(secs)
        ),
        p50_ms: best * 1000.0,
        p99_ms: f64::NAN,
        delivered_per_s: LINES as f64 / best,
        complete: format!("{lines}/{LINES}"),
        rss_mb: server.rss_kb() as f64 / 1024.0,
        per_stream_kb: f64::NAN,
        reads_per_line: f64::NAN,
        redis_conns: 0,
        extra: format!(
            "{best:.2} s vs bare XRANGE COUNT 1000 {best_bare:.2} s ({:.2}×); server RSS rose {rise:.1} MiB",
            best / best_bare
        ),
    })
}

pub(super) async fn search(
    bin: &PathBuf,
    keys: &(String, Signer),
    secs: u64,
) -> anyhow::Result<Row> {
    let redis = whole_log().await?;
    let server = Server::start(bin, &redis.url(), &keys.0, &[]).await?;
    let (token, _) = keys.1.session_token(USER, Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let url = format!("{}/api/jobs/{JOB}/logs/search", server.base);
    let (mut best, mut best_bare, mut slowest_page, mut found, mut pages) =
        (f64::MAX, f64::MAX, 0f64, 0usize, 0usize);
    for _ in 0..rounds(secs) {
        let started = Instant::now();
        let (mut after, mut n, mut p) = (None::<String>, 0usize, 0usize);
        loop {
            let mut query = vec![("q", "NEEDLE".to_owned()), ("limit", "500".to_owned())];
            if let Some(a) = &after {
                query.push(("after_id", a.clone()));
            }
            let page_started = Instant::now();
            let page: serde_json::Value = http
                .get(&url)
                .bearer_auth(&token)
                .query(&query)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            slowest_page = slowest_page.max(page_started.elapsed().as_secs_f64());
            p += 1;
            n += page["matches"].as_array().map_or(0, Vec::len);
            if page["has_more"] != true {
                break;
            }
            after = page["scanned_to"].as_str().map(str::to_owned);
        }
        best = best.min(started.elapsed().as_secs_f64());
        (found, pages) = (n, p);
        let (bare, entries) = bare_xrange(&redis).await?;
        anyhow::ensure!(entries == LINES, "the floor read {entries} entries");
        best_bare = best_bare.min(bare);
    }
    anyhow::ensure!(found as u64 == LINES / 1000, "search found {found} matches");
    Ok(Row {
        scenario: "search".into(),
        mode: "-".into(),
        load: format!(
            "1,000,000 lines, 1 in 1,000 matching, {pages} pages, best of {}",
            rounds(secs)
        ),
        p50_ms: best * 1000.0,
        p99_ms: slowest_page * 1000.0,
        delivered_per_s: LINES as f64 / best,
        complete: format!("{found}/{}", LINES / 1000),
        rss_mb: server.rss_kb() as f64 / 1024.0,
        per_stream_kb: f64::NAN,
        reads_per_line: f64::NAN,
        redis_conns: 0,
        extra: format!(
            "{best:.2} s vs bare XRANGE COUNT 1000 {best_bare:.2} s ({:.2}×); slowest page {:.0} ms",
            best / best_bare,
            slowest_page * 1000.0
        ),
    })
}
