//! The log operations a viewer pages and follows: history (both ways, and around a line) and
//! the live Server-Sent Events stream.

use poem::web::Data;
use poem_openapi::{
    OpenApi, Tags,
    param::{Header, Path, Query},
};

use super::{ApiState, json::RawJson, sse::SseFrames};
use crate::{
    auth::Session,
    error::ApiError,
    history::{self, Cursor},
    http_errors::{from_extractor, operation_responses},
    ids::{JobId, StreamId},
    viewer::{self, Opened, Requester},
    wire::payload::HistoryPage,
};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

#[derive(Tags)]
pub(super) enum ApiTags {
    /// Build logs of a job.
    Logs,
}

/// Operations on a job's build logs.
pub struct LogsApi;

operation_responses! {
    /// Responses of the history operation.
    #[oai(bad_request_handler = "history_bad_request")]
    pub enum HistoryResponse {
        /// A page of lines, oldest first.
        #[oai(status = 200)]
        Ok(
            RawJson<HistoryPage>,
            /// Always `no-store`: the page is private to the job's owner.
            #[oai(header = "Cache-Control")]
            String,
        ),
    }
    /// Malformed `job_id` (`invalid_job_id`), a malformed cursor or more than one
    /// (`invalid_cursor`), or a malformed `limit` (`invalid_limit`).
    BadRequest;
}

fn history_bad_request(err: poem::Error) -> HistoryResponse {
    from_extractor(&err).into()
}

operation_responses! {
    /// Responses of the stream operation.
    #[oai(bad_request_handler = "stream_bad_request")]
    pub enum StreamResponse {
        /// The event stream: `retry:` first, then `start`, `reset` when a resume point is gone,
        /// `log` lines, `heartbeat`s, and `done` at the end. Never compressed.
        #[oai(status = 200)]
        Ok(
            SseFrames,
            /// Always `no-cache`.
            #[oai(header = "Cache-Control")]
            String,
            /// Always `no`: proxies must not buffer the stream.
            #[oai(header = "X-Accel-Buffering")]
            String,
        ),
        /// Resumed after the end: the job is finished and nothing is left after `Last-Event-ID`.
        /// A browser EventSource stops reconnecting on 204.
        #[oai(status = 204)]
        NoContent,
    }
    /// Malformed `job_id` (`invalid_job_id`) or `Last-Event-ID` (`invalid_cursor`).
    BadRequest;
    /// Too many open streams for this user or this instance (`too_many_streams`); retry after
    /// `Retry-After` seconds. Open streams are untouched.
    TooManyRequests;
}

fn stream_bad_request(err: poem::Error) -> StreamResponse {
    from_extractor(&err).into()
}

#[OpenApi(tag = "ApiTags::Logs")]
impl LogsApi {
    /// Read a page of a job's log history
    ///
    /// At most one cursor: lines strictly older than `before_id` (the newest of them), strictly
    /// newer than `after_id` (the oldest of them), or the page around `around_id` (the line
    /// itself when retained, about half the page before it and the rest after; a line no
    /// longer retained, or never written, is centred where it would stand); with none, the
    /// newest lines. Lines come oldest first. Page backwards with `before_id = oldest_id` while
    /// `has_more`, forwards with `after_id = newest_id` while `has_newer`: either visits every
    /// retained line exactly once, lines appended meanwhile included. A line's id is its
    /// permalink. Above a live stream, start from its `start` event's `history_cursor`. A page
    /// stays under 1 MiB of JSON; a job with no log stream yet has an empty page.
    #[oai(
        path = "/api/jobs/:job_id/logs",
        method = "get",
        operation_id = "getJobLogs"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn history(
        &self,
        session: Session,
        state: Data<&ApiState>,
        /// The job's id: 1-128 characters of `A-Z a-z 0-9 _ -`.
        job_id: Path<JobId>,
        /// Exclusive upper bound: a stream id `<ms>-<seq>` (usually the previous page's `oldest_id`).
        before_id: Query<Option<StreamId>>,
        /// Exclusive lower bound: a stream id `<ms>-<seq>` (usually the previous page's `newest_id`).
        after_id: Query<Option<StreamId>>,
        /// A line's id `<ms>-<seq>` (its permalink): the page centred on it.
        around_id: Query<Option<StreamId>>,
        /// Lines per page, 1-500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> HistoryResponse {
        let result = async {
            let job = job_id.0;
            let cursor = match (before_id.0, after_id.0, around_id.0) {
                (None, None, None) => Cursor::Newest,
                (Some(id), None, None) => Cursor::Before(id),
                (None, Some(id), None) => Cursor::After(id),
                (None, None, Some(id)) => Cursor::Around(id),
                _ => return Err(ApiError::CursorConflict),
            };
            let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(ApiError::InvalidLimit);
            }
            history::page(
                state.store(),
                &job,
                &session.user_id,
                cursor,
                limit as usize,
            )
            .await?
            .ok_or(ApiError::JobNotFound)
        };
        match result.await {
            Ok(page) => HistoryResponse::Ok(RawJson::new(page), "no-store".to_owned()),
            Err(err) => err.into(),
        }
    }

    /// Follow a job's log live (Server-Sent Events)
    ///
    /// First connect: live only, from the moment the request was accepted (`start` says that
    /// position and the `history_cursor` that meets it). Resume with `Last-Event-ID`: every line
    /// after it, in order, then live. `done` ends the stream once the job is `ready` or
    /// `failed`; resuming after that answers 204. The stream also ends when the session token
    /// expires: reconnect with a fresh token and `Last-Event-ID` to lose nothing.
    #[oai(
        path = "/api/jobs/:job_id/logs/stream",
        method = "get",
        operation_id = "streamJobLogs"
    )]
    async fn stream(
        &self,
        session: Session,
        state: Data<&ApiState>,
        req: &poem::Request,
        /// The job's id: 1-128 characters of `A-Z a-z 0-9 _ -`.
        job_id: Path<JobId>,
        /// Resume after this stream id `<ms>-<seq>` (browsers send it on reconnect). Empty is absent.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
    ) -> StreamResponse {
        let result = async {
            let job = job_id.0;
            // A value that is not ASCII never reaches the typed header: it is malformed, not
            // absent.
            if req
                .headers()
                .get_all("last-event-id")
                .iter()
                .any(|v| v.to_str().is_err())
            {
                return Err(ApiError::InvalidCursor("Last-Event-ID"));
            }
            let resume = match last_event_id.0.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(raw) => Some(
                    raw.parse::<StreamId>()
                        .map_err(|_| ApiError::InvalidCursor("Last-Event-ID"))?,
                ),
            };
            let requester = Requester {
                user_id: session.user_id,
                valid_until: session.valid_until,
            };
            viewer::open(state.streams(), requester, job, resume).await
        };
        match result.await {
            Ok(Opened::NoContent) => StreamResponse::NoContent,
            Ok(Opened::Events(frames, ends, outlet)) => StreamResponse::Ok(
                SseFrames(frames, ends, outlet),
                "no-cache".to_owned(),
                "no".to_owned(),
            ),
            Err(err) => err.into(),
        }
    }
}
