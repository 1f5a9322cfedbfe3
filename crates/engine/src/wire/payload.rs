//! The payloads of both endpoints: log lines, history pages and the Server-Sent Events of a
//! stream. The spec's schemas derive from these types (poem-openapi, with the `openapi` feature); the
//! bytes on the wire come from serde, in the field order declared here.

#[cfg(feature = "openapi")]
use std::borrow::Cow;

#[cfg(feature = "openapi")]
use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde::Serialize;

/// A value that is always present and may be `null`: published as a required, nullable field
/// (poem-openapi makes an `Option` field optional, which a generated client types as `?:`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Nullable<T>(pub Option<T>);

#[cfg(feature = "openapi")]
impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

#[cfg(feature = "openapi")]
impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<serde_json::Value> {
        self.0.to_json()
    }
}

#[cfg(feature = "openapi")]
impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        Option::<T>::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

/// One log line, as the job runner wrote it. Fields missing in the store are empty strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
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

/// A page of history, oldest line first. Its bytes are written by [`crate::history`]; this
/// type gives the spec its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct HistoryPage {
    /// The page's lines, oldest first: older than `before_id`, newer than `after_id`, around
    /// `around_id`, or the newest.
    pub lines: Vec<LogLine>,
    /// Whether retained lines older than the page existed (for an empty page: older than the
    /// cursor): fetch them with `before_id = oldest_id`.
    pub has_more: bool,
    /// Id of the oldest line in `lines`; null when `lines` is empty.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub oldest_id: Nullable<String>,
    /// Whether retained lines newer than the page existed (for an empty page: newer than the
    /// cursor): fetch them with `after_id = newest_id`.
    pub has_newer: bool,
    /// Id of the newest line in `lines`; null when `lines` is empty.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub newest_id: Nullable<String>,
}

/// A page of search matches (contract §10). Its bytes are written by [`crate::search`]; this
/// type gives the spec its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct SearchPage {
    /// Matching lines, oldest first.
    pub matches: Vec<LogLine>,
    /// Id of the last line examined; null when none was. Continue with `after_id = scanned_to`.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub scanned_to: Nullable<String>,
    /// Whether retained lines after `scanned_to` existed: call again to search them.
    pub has_more: bool,
}

/// `retry`: sent first, as the SSE `retry:` field (not an event): how long a browser waits
/// before reconnecting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct RetryData {
    /// Reconnection delay in milliseconds: 1000-15000 at the start of a stream; at most 500
    /// right before a stream ends because its token expired, so that a browser reconnects at
    /// once with a fresh token.
    pub retry_ms: u32,
}

/// `event: start`, with `id:` the position the stream starts after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct StartData {
    /// The job's status when the stream started.
    pub status: String,
    /// The `before_id` for which the history endpoint returns exactly the lines up to and
    /// including the start position: history above a live view, with no gap and no duplicate.
    pub history_cursor: String,
    /// The start position (sent as the event's `id`, not in its data).
    #[cfg_attr(feature = "openapi", oai(skip))]
    #[serde(skip)]
    pub position: String,
}

/// `event: heartbeat`, data `{}`: sent after a heartbeat interval with nothing else sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct HeartbeatData {}

/// A job's final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "lowercase"))]
#[serde(rename_all = "lowercase")]
pub enum FinalStatus {
    Ready,
    Failed,
}

/// `event: done`: the job is terminal and every line written before that has been sent. The
/// server closes the stream after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DoneData {
    /// `ready` or `failed`.
    pub status: FinalStatus,
}

/// Why a resume could not be honoured exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// Lines after the resume point may have been trimmed, deleted or expired.
    Trimmed,
    /// The resume point is past the stream's end: a position this stream never had (another
    /// job's id, or a stream deleted and written anew). The stream starts over at `0-0`.
    UnknownPosition,
}

/// `event: reset` (no `id:`), right after `start`: the `Last-Event-ID` cannot be honoured
/// exactly. Every line still retained after it follows (for `unknown_position`: every
/// retained line), then the live stream: reload the view from history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ResetData {
    /// Why the resume point could not be honoured.
    pub reason: ResetReason,
    /// The oldest retained line's id; null when none is retained.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub oldest_id: Nullable<String>,
}

/// One item of the event stream. The SSE event name says which: `start` (StartData), `log`
/// (LogLine, `id:` the line's id), `heartbeat` (HeartbeatData), `done` (DoneData), `reset`
/// (ResetData); `data:` holds the payload as one line of JSON. RetryData is the `retry:` field
/// sent before everything else.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Union))]
pub enum StreamEvent {
    Retry(RetryData),
    Start(StartData),
    Log(LogLine),
    Heartbeat(HeartbeatData),
    Done(DoneData),
    Reset(ResetData),
}
