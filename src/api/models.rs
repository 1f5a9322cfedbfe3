//! Payloads of the API: log lines, history pages, and the Server-Sent Events of a stream.

use poem_openapi::{Enum, Object, Union};

use crate::store::LogEntry;

/// One log line, as the job runner wrote it. Fields missing in the store are empty strings.
#[derive(Clone, Debug, PartialEq, Eq, Object, serde::Serialize)]
pub struct LogLine {
    /// Stream entry id `<ms>-<seq>`: unique, ordered, and the SSE `id` of the line's event.
    pub id: String,
    /// When the line was written: ISO 8601 UTC with offset, e.g. `2026-11-24T03:05:57.123456+00:00`.
    pub ts: String,
    /// `stdout`, `stderr` or `system`.
    pub source: String,
    /// The line's text: any UTF-8, possibly empty.
    pub text: String,
    /// Build phase, free text (`scaffold`, `install`, `dev_server`, …).
    pub phase: String,
}

impl From<LogEntry> for LogLine {
    fn from(e: LogEntry) -> Self {
        Self {
            id: e.id.to_string(),
            ts: e.ts,
            source: e.source,
            text: e.text,
            phase: e.phase,
        }
    }
}

/// A page of history, oldest line first.
#[derive(Clone, Debug, PartialEq, Eq, Object, serde::Serialize)]
pub struct HistoryPage {
    /// Lines strictly older than `before_id`, oldest first.
    pub lines: Vec<LogLine>,
    /// Whether older lines exist: fetch them with `before_id = oldest_id`.
    pub has_more: bool,
    /// Id of the oldest line in `lines`; null when `lines` is empty.
    #[oai(nullable)]
    pub oldest_id: Option<String>,
}

/// `retry`: sent first, as the SSE `retry:` field (not an event): how long a browser waits
/// before reconnecting.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
pub struct RetryData {
    /// Reconnection delay in milliseconds (1000-15000).
    pub retry_ms: u32,
}

/// `event: start`, with `id:` the position the stream starts after.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
pub struct StartData {
    /// The job's status when the stream started.
    pub status: String,
    /// The `before_id` for which the history endpoint returns exactly the lines up to and
    /// including the start position: history above a live view, with no gap and no duplicate.
    pub history_cursor: String,
    /// The start position (sent as the event's `id`, not in its data).
    #[oai(skip)]
    pub position: String,
}

/// `event: heartbeat`, data `{}`: sent after a heartbeat interval with nothing else sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Object)]
pub struct HeartbeatData {}

/// A job's final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum FinalStatus {
    Ready,
    Failed,
}

/// `event: done`: the job is terminal and every line written before that has been sent. The
/// server closes the stream after it.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
pub struct DoneData {
    /// `ready` or `failed`.
    pub status: FinalStatus,
}

/// Why a resume could not be honoured exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ResetReason {
    /// Lines after the resume point may have been trimmed or deleted.
    Trimmed,
}

/// `event: reset` (no `id:`): lines after the `Last-Event-ID` may be gone. Every line still
/// retained after it follows, then the live stream: reload the view from history.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
pub struct ResetData {
    pub reason: ResetReason,
    /// The oldest retained line's id; null when none is retained.
    #[oai(nullable)]
    pub oldest_id: Option<String>,
}

/// One item of the event stream. The SSE event name says which: `start` (StartData), `log`
/// (LogLine, `id:` the line's id), `heartbeat` (HeartbeatData), `done` (DoneData), `reset`
/// (ResetData); `data:` holds the payload as one line of JSON. RetryData is the `retry:` field
/// sent before everything else.
#[derive(Clone, Debug, PartialEq, Eq, Union)]
pub enum StreamEvent {
    Retry(RetryData),
    Start(StartData),
    Log(LogLine),
    Heartbeat(HeartbeatData),
    Done(DoneData),
    Reset(ResetData),
}

impl StreamEvent {
    /// The event as it goes on the wire.
    pub fn into_sse(self) -> poem::web::sse::Event {
        use poem::web::sse::Event;
        use poem_openapi::types::ToJSON;
        match self {
            Self::Retry(r) => Event::retry(u64::from(r.retry_ms)),
            Self::Start(s) => {
                let position = s.position.clone();
                Event::message(s.to_json_string())
                    .event_type("start")
                    .id(position)
            }
            Self::Log(line) => {
                let id = line.id.clone();
                Event::message(line.to_json_string())
                    .event_type("log")
                    .id(id)
            }
            Self::Heartbeat(h) => Event::message(h.to_json_string()).event_type("heartbeat"),
            Self::Done(d) => Event::message(d.to_json_string()).event_type("done"),
            Self::Reset(r) => Event::message(r.to_json_string()).event_type("reset"),
        }
    }
}
