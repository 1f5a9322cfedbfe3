//! `soak`: the run that would have caught a silent viewer. Viewers over jobs of different
//! users, lines in random bursts and pauses (some huge), `HEARTBEAT_SECS=1`, short tokens that
//! viewers renew as the TypeScript client does (a new connection with `Last-Event-ID` a little
//! before `exp`, or at once when the server ends the stream at expiry), viewers joining and
//! leaving throughout, some reading slowly, some stalling, some going away mid-line.
//!
//! It fails (an error, so a non-zero exit) when a viewer that stayed missed, repeated or
//! reordered a line across its reconnects, when a connected viewer went more than
//! [`MAX_SILENCE`] without an event, or when a stream slot is still open after everyone left.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use buildlogs::{dev::Signer, ids::StreamId};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{Row, Server, Writer, find, number, start_redis, xadd};

/// The longest a connected, reading viewer may go without an event (heartbeats every second).
const MAX_SILENCE: Duration = Duration::from_secs(2);
/// How long after the jobs' end a viewer may take to get `done`.
const DRAIN: Duration = Duration::from_secs(120);
/// How long a stream request may wait for its response head.
const HEAD_WITHIN: Duration = Duration::from_secs(10);

/// What the soak is asked to do.
pub struct Soak {
    pub viewers: usize,
    pub jobs: usize,
    pub secs: u64,
    pub seed: u64,
}

/// How one viewer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Reads everything as it comes, until `done`.
    Steady,
    /// Reads through a small receive buffer, a little at a time with pauses (a few hundred KB
    /// a second at most).
    Slow,
    /// Stops reading for a few seconds once, then goes on.
    Staller,
    /// Leaves at some point (counted apart: it did not stay).
    Leaver,
    /// Leaves in the middle of a line (a frame read in part).
    MidLine,
}

/// One viewer's plan, drawn from the seed.
#[derive(Clone, Debug)]
struct Plan {
    job: usize,
    kind: Kind,
    join_after: Duration,
    /// Leavers: how long after joining; stallers: when the stall starts.
    at: Duration,
    stall_for: Duration,
    /// Seed of this viewer's token lifetimes.
    seed: u64,
}

/// What one viewer saw, over all its connections.
#[derive(Debug, Default)]
struct Seen {
    /// The position its first stream started after.
    start: Option<StreamId>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    lines: u64,
    out_of_order: u64,
    done: bool,
    left: bool,
    connections: u64,
    /// Stream requests answered 429 or 503, retried after their `Retry-After`.
    refused: u64,
    longest_silence: Duration,
    /// Where the longest silence was, for the row's notes.
    silence_where: String,
    failure: Option<String>,
}

/// Every line a job got: its id and sequence number, in order.
type Written = Arc<Mutex<Vec<Vec<(StreamId, u64)>>>>;

/// Runs the soak against `bin serve`; `public_pem`/`private_pem` are the token keys. Its row,
/// and what failed, if anything did.
pub async fn soak(
    bin: &std::path::PathBuf,
    public_pem: &str,
    private_pem: &str,
    soak: Soak,
) -> anyhow::Result<(Row, Option<anyhow::Error>)> {
    let Soak {
        viewers,
        jobs,
        secs,
        seed,
    } = soak;
    eprintln!("soak: seed {seed} ({viewers} viewers, {jobs} jobs, {secs} s)");
    if jobs == 0 || viewers < jobs {
        bail!("the soak needs at least one viewer per job ({viewers} viewers, {jobs} jobs)");
    }
    let signer = Arc::new(Signer::from_pem(private_pem, None)?);
    let redis = start_redis();
    let server = Server::start(
        bin,
        &redis.url(),
        public_pem,
        &[("HEARTBEAT_SECS", "1".to_owned())],
    )
    .await?;
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse()?;
    let mut conn = redis.client().get_multiplexed_async_connection().await?;
    // A loaded machine can hold a 100 KB append past redis-rs's default half second; an append
    // that timed out may still have been written, which the check below could not tell.
    conn.set_response_timeout(Duration::from_secs(30));
    let job_ids: Vec<String> = (0..jobs).map(|i| format!("soak-{i}")).collect();
    let mut writer = Writer::Single(conn.clone());
    for (i, job) in job_ids.iter().enumerate() {
        let _: i64 = writer
            .run(
                redis::cmd("HSET")
                    .arg(format!("job:{job}"))
                    .arg("user_id")
                    .arg(user(i))
                    .arg("status")
                    .arg("code"),
            )
            .await?;
    }
    let rss_start = server.rss_kb();
    let mut rng = StdRng::seed_from_u64(seed);
    let run_for = Duration::from_secs(secs);
    let plans: Vec<Plan> = (0..viewers)
        .map(|i| {
            let kind = match rng.gen_range(0..100) {
                0..10 => Kind::Slow,
                10..15 => Kind::Staller,
                15..25 => Kind::Leaver,
                25..30 => Kind::MidLine,
                _ => Kind::Steady,
            };
            let join_after = run_for.mul_f64(rng.gen_range(0.0..0.6));
            Plan {
                job: i % jobs,
                kind,
                join_after,
                at: run_for.mul_f64(rng.gen_range(0.05..0.35)),
                stall_for: Duration::from_millis(rng.gen_range(2000..5000)),
                seed: rng.r#gen(),
            }
        })
        .collect();

    let written: Written = Arc::new(Mutex::new(vec![Vec::new(); jobs]));
    let started = Instant::now();
    let writers: Vec<_> = job_ids
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let (job, written) = (job.clone(), written.clone());
            let mut conn = conn.clone();
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9e37));
            tokio::spawn(async move {
                let mut seq = 0u64;
                while started.elapsed() < run_for {
                    for _ in 0..rng.gen_range(1..40) {
                        // One line in 300 is huge: more than a put takes, the writer's path.
                        let pad = if rng.gen_ratio(1, 300) {
                            100_000
                        } else {
                            rng.gen_range(0..200)
                        };
                        let text = format!("seq={seq} {}", "x".repeat(pad));
                        let id: String = xadd(&job, text, true).query_async(&mut conn).await?;
                        written.lock().unwrap()[i].push((id.parse()?, seq));
                        seq += 1;
                    }
                    let pause = rng.gen_range(0..3000);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                anyhow::Ok(())
            })
        })
        .collect();

    let tasks: Vec<_> = plans
        .iter()
        .cloned()
        .map(|plan| {
            let job = job_ids[plan.job].clone();
            let signer = signer.clone();
            tokio::spawn(async move {
                tokio::time::sleep(plan.join_after).await;
                let give_up = started + run_for + DRAIN;
                view(addr, &job, &user(plan.job), &signer, &plan, give_up).await
            })
        })
        .collect();

    for w in writers {
        w.await??;
    }
    // Every job ends: `done` reaches each viewer still there after all the job's lines.
    for (i, job) in job_ids.iter().enumerate() {
        let _: i64 = writer
            .run(
                redis::cmd("HSET")
                    .arg(format!("job:{job}"))
                    .arg("user_id")
                    .arg(user(i))
                    .arg("status")
                    .arg("ready"),
            )
            .await?;
        let _: i64 = writer
            .run(
                redis::cmd("PUBLISH")
                    .arg(format!("job:{job}:events"))
                    .arg(format!(r#"{{"job_id":"{job}","status":"ready"}}"#)),
            )
            .await?;
    }
    let mut seen = Vec::with_capacity(viewers);
    for task in tasks {
        // Each viewer gives up by itself (and says so) `DRAIN` after the end.
        seen.push(task.await.context("a viewer's task failed")?);
    }

    // Everyone has left: every slot must be free again.
    let http = reqwest::Client::new();
    let open_slots = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = http
                .get(format!("{}/metrics", server.base))
                .send()
                .await?
                .text()
                .await?;
            let open = metric(&text, "buildlogs_open_streams");
            if open == 0.0 || Instant::now() > deadline {
                break open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let rss_end = server.rss_kb();

    let written = written.lock().unwrap();
    let mut stayed = 0;
    let mut complete = 0;
    let mut problems = Vec::new();
    let mut longest_silence = Duration::ZERO;
    let mut silence_where = String::new();
    let mut reconnects = 0;
    let mut refused = 0;
    for (plan, seen) in plans.iter().zip(&seen) {
        if seen.longest_silence > longest_silence {
            longest_silence = seen.longest_silence;
            silence_where = format!("a {:?} viewer's {}", plan.kind, seen.silence_where);
        }
        reconnects += seen.connections.saturating_sub(1);
        refused += seen.refused;
        if seen.left {
            continue;
        }
        stayed += 1;
        let lines = &written[plan.job];
        let after: Vec<&(StreamId, u64)> = match seen.start {
            Some(start) => lines.iter().filter(|(id, _)| *id > start).collect(),
            None => Vec::new(),
        };
        let ok = seen.failure.is_none()
            && seen.done
            && seen.out_of_order == 0
            && seen.lines == after.len() as u64
            && seen.first_seq == after.first().map(|(_, s)| *s)
            && seen.last_seq == after.last().map(|(_, s)| *s);
        if ok {
            complete += 1;
        } else if problems.len() < 5 {
            problems.push(format!(
                "viewer of job {} ({:?}): {} lines of {} (seq {:?}..{:?}, expected {:?}..{:?}), \
                 {} out of order, done {}, {} connections{}",
                plan.job,
                plan.kind,
                seen.lines,
                after.len(),
                seen.first_seq,
                seen.last_seq,
                after.first().map(|(_, s)| s),
                after.last().map(|(_, s)| s),
                seen.out_of_order,
                seen.done,
                seen.connections,
                seen.failure
                    .as_deref()
                    .map(|f| format!(", {f}"))
                    .unwrap_or_default(),
            ));
        }
    }
    let lines_written: usize = written.iter().map(Vec::len).sum();
    let row = Row {
        scenario: "soak".into(),
        mode: "fanout".into(),
        load: format!(
            "{viewers} viewers over {jobs} jobs of {jobs} users, bursts and pauses up to 3 s \
             (some lines of 100 KB), HEARTBEAT_SECS=1, tokens of 5-15 s, {secs}s ({lines_written} \
             lines)"
        ),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        delivered_per_s: f64::NAN,
        complete: format!("{complete}/{stayed}"),
        rss_mb: rss_end as f64 / 1024.0,
        per_stream_kb: f64::NAN,
        reads_per_line: f64::NAN,
        redis_conns: 0,
        extra: format!(
            "longest silence {:.1} s ({silence_where}); RSS {:.1} MB at start, {:.1} MB at the end; open slots \
             after everyone left: {open_slots}; {reconnects} reconnects ({refused} answered 429 \
             or 503 and retried after Retry-After); seed {seed}",
            longest_silence.as_secs_f64(),
            rss_start as f64 / 1024.0,
            rss_end as f64 / 1024.0,
        ),
    };
    let mut failed = Vec::new();
    if complete != stayed {
        failed.push(format!(
            "complete {complete}/{stayed}: {}",
            problems.join("; ")
        ));
    }
    if longest_silence > MAX_SILENCE {
        failed.push(format!(
            "a connected viewer went {:.1} s without an event (at most {:.1} s)",
            longest_silence.as_secs_f64(),
            MAX_SILENCE.as_secs_f64()
        ));
    }
    if open_slots != 0.0 {
        failed.push(format!(
            "{open_slots} stream slots open after everyone left"
        ));
    }
    let failed = (!failed.is_empty())
        .then(|| anyhow::anyhow!("soak failed (seed {seed}): {}", failed.join(" | ")));
    Ok((row, failed))
}

fn user(job: usize) -> String {
    format!("user_soak_{job}")
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .sum()
}

/// How one connection ended.
enum End {
    /// `done`: the viewer is finished.
    Done,
    /// The server ended the stream (its token expired) or the viewer renews its token: go on
    /// with a new connection from the last id.
    Resume,
    /// The viewer left.
    Left,
}

/// Follows one job as the plan says, reconnecting with `Last-Event-ID` until `done`.
async fn view(
    addr: std::net::SocketAddr,
    job: &str,
    user: &str,
    signer: &Signer,
    plan: &Plan,
    give_up: Instant,
) -> Seen {
    let mut seen = Seen::default();
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let joined = Instant::now();
    let mut stalled = plan.kind != Kind::Staller;
    // The position to resume from: the last line seen, or the first stream's start.
    let mut last_id: Option<StreamId> = None;
    loop {
        if Instant::now() >= give_up {
            seen.failure = Some(format!(
                "no `done` {} s after the jobs ended",
                DRAIN.as_secs()
            ));
            return seen;
        }
        let ttl = Duration::from_secs(rng.gen_range(5..=15));
        let (token, _) = signer.session_token(user, ttl);
        // As the TypeScript client: a new connection a quarter of the lifetime (at most 5 s)
        // before `exp`, unless the server ends this one first.
        let renew_at = (Instant::now() + ttl - (ttl / 4).min(Duration::from_secs(5))).min(give_up);
        seen.connections += 1;
        let end = match connect(addr, job, &token, last_id, plan.kind == Kind::Slow).await {
            // Retried as the TypeScript client does, after `Retry-After`.
            Ok(Opened::Refused(wait)) => {
                seen.refused += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            Ok(Opened::Stream(tcp, raw)) => {
                follow(
                    (tcp, raw),
                    &mut seen,
                    &mut last_id,
                    plan,
                    joined,
                    renew_at,
                    &mut stalled,
                )
                .await
            }
            // 204: a finished job with nothing after our position (we had `done` to come).
            Ok(Opened::NoContent) => {
                seen.done = true;
                End::Done
            }
            Err(err) => {
                seen.failure = Some(format!("{err:#}"));
                End::Done
            }
        };
        match end {
            End::Done => return seen,
            End::Left => {
                seen.left = true;
                return seen;
            }
            End::Resume => {}
        }
    }
}

/// What a stream request got.
enum Opened {
    /// `200`: the connection, and what came after the head.
    Stream(TcpStream, Vec<u8>),
    /// `204`: nothing after the position, the job is finished.
    NoContent,
    /// `429` or `503`: try again after this long.
    Refused(Duration),
}

/// Opens a stream request.
async fn connect(
    addr: std::net::SocketAddr,
    job: &str,
    token: &str,
    last_id: Option<StreamId>,
    small_buffer: bool,
) -> anyhow::Result<Opened> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    let mut tcp = tokio::time::timeout(HEAD_WITHIN, socket.connect(addr))
        .await
        .context("no connection within 10 s")??;
    let resume = last_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /api/jobs/{job}/logs/stream HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\n{resume}\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_by = tokio::time::Instant::now() + HEAD_WITHIN;
    let end = loop {
        let n = tokio::time::timeout_at(head_by, tcp.read(&mut chunk))
            .await
            .context("no response head within 10 s")??;
        if n == 0 {
            bail!("the connection closed before a response head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 204") {
        return Ok(Opened::NoContent);
    }
    if head.starts_with("http/1.1 503") || head.starts_with("http/1.1 429") {
        let secs = head
            .lines()
            .find_map(|l| l.strip_prefix("retry-after:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        return Ok(Opened::Refused(Duration::from_secs(secs)));
    }
    if !head.starts_with("http/1.1 200") {
        bail!(
            "stream refused: {}",
            String::from_utf8_lossy(&buf[..end.min(80)])
        );
    }
    buf.drain(..end + 4);
    Ok(Opened::Stream(tcp, buf))
}

/// Reads one connection's events until it ends, as the plan says.
async fn follow(
    (mut tcp, mut raw): (TcpStream, Vec<u8>),
    seen: &mut Seen,
    last_id: &mut Option<StreamId>,
    plan: &Plan,
    joined: Instant,
    renew_at: Instant,
    stalled: &mut bool,
) -> End {
    let mut body = Dechunk::default();
    // A slow reader takes 2 KB at a time through a 4 KB receive buffer, pausing between reads:
    // the server's writes to it keep meeting a full socket, yet it keeps up with a job's
    // average output (a few KB a second) and catches up after its bursts and huge lines.
    let mut chunk = vec![0u8; if plan.kind == Kind::Slow { 2048 } else { 16384 }];
    // When bytes of an event last came: a slow reader taking a huge line a little at a time
    // is not silent.
    let connected = Instant::now();
    let mut last_data = connected;
    let mut lines_here = 0u64;
    loop {
        let (events, partial) = body.feed(&raw);
        raw.clear();
        for event in events {
            match event {
                Event::Start(id) => {
                    if seen.start.is_none() {
                        seen.start = Some(id);
                        *last_id = Some(id);
                    }
                }
                Event::Line(id, seq) => {
                    match seen.last_seq {
                        Some(last) if seq != last + 1 => seen.out_of_order += 1,
                        None => seen.first_seq = Some(seq),
                        _ => {}
                    }
                    seen.last_seq = Some(seq);
                    seen.lines += 1;
                    lines_here += 1;
                    *last_id = Some(id);
                }
                Event::Done => {
                    seen.done = true;
                    return End::Done;
                }
                Event::Other => {}
            }
        }
        match plan.kind {
            Kind::Leaver if joined.elapsed() >= plan.at => return End::Left,
            Kind::MidLine if joined.elapsed() >= plan.at && partial => return End::Left,
            Kind::Staller if !*stalled && joined.elapsed() >= plan.at => {
                *stalled = true;
                tokio::time::sleep(plan.stall_for).await;
                // Its silence while it did not read is its own.
                last_data = Instant::now();
            }
            Kind::Slow => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => {}
        }
        if Instant::now() >= renew_at {
            return End::Resume;
        }
        let read = tokio::time::timeout_at(
            tokio::time::Instant::from_std(renew_at),
            tcp.read(&mut chunk),
        )
        .await;
        let now = Instant::now();
        if now - last_data > seen.longest_silence {
            seen.longest_silence = now - last_data;
            seen.silence_where = format!(
                "connection {}, {:.1} s after its head, after {lines_here} lines on it, ended by {}",
                seen.connections,
                (last_data - connected).as_secs_f64(),
                match &read {
                    Err(_) => "its token's renewal",
                    Ok(Ok(0) | Err(_)) => "the connection's end",
                    Ok(Ok(_)) => "bytes",
                }
            );
        }
        last_data = now;
        match read {
            // Time to renew the token: a new connection from the last id.
            Err(_) => return End::Resume,
            // The server ended the stream (expiry) or the connection failed: resume.
            Ok(Ok(0) | Err(_)) => return End::Resume,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An SSE event, as far as the soak cares.
enum Event {
    Start(StreamId),
    Line(StreamId, u64),
    Done,
    Other,
}

/// A chunked body, decoded as it arrives, cut into SSE events.
#[derive(Default)]
struct Dechunk {
    /// Undecoded bytes.
    pending: Vec<u8>,
    /// Bytes left in the current chunk.
    left: usize,
    /// The decoded body not yet cut into events.
    body: Vec<u8>,
}

impl Dechunk {
    /// The events completed by `bytes`, and whether a partial event is left.
    fn feed(&mut self, bytes: &[u8]) -> (Vec<Event>, bool) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            if self.left > 0 {
                let take = self.left.min(self.pending.len() - at);
                self.body.extend_from_slice(&self.pending[at..at + take]);
                at += take;
                self.left -= take;
                if self.left > 0 {
                    break;
                }
                continue;
            }
            // A size line (after the previous chunk's CRLF).
            let rest = &self.pending[at..];
            let rest_start = rest
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(rest.len());
            let Some(eol) = find(&rest[rest_start..], b"\r\n") else {
                break;
            };
            let line = &rest[rest_start..rest_start + eol];
            let size =
                usize::from_str_radix(std::str::from_utf8(line).unwrap_or("0"), 16).unwrap_or(0);
            at += rest_start + eol + 2;
            if size == 0 {
                break;
            }
            self.left = size;
        }
        self.pending.drain(..at);
        let mut events = Vec::new();
        while let Some(end) = find(&self.body, b"\n\n") {
            let frame: Vec<u8> = self.body.drain(..end + 2).collect();
            events.push(parse(&frame));
        }
        let partial = !self.body.is_empty() || self.left > 0;
        (events, partial)
    }
}

fn parse(frame: &[u8]) -> Event {
    let id = frame
        .split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(b"id: "))
        .and_then(|id| std::str::from_utf8(id).ok()?.parse::<StreamId>().ok());
    if find(frame, b"event: start").is_some() {
        return id.map_or(Event::Other, Event::Start);
    }
    if find(frame, b"event: done").is_some() {
        return Event::Done;
    }
    if find(frame, b"event: log").is_some()
        && let (Some(id), Some(at)) = (id, find(frame, b"seq="))
    {
        return Event::Line(id, number(&frame[at + 4..]).0);
    }
    Event::Other
}
