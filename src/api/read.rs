//! The operations over the whole retained log: download it as text, and search it.

use std::io;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use poem::{Body, IntoResponse, Response, web::Data};
use poem_openapi::{
    Enum, OpenApi,
    param::{Path, Query},
    payload::Payload,
    registry::{MetaSchema, MetaSchemaRef, Registry},
};

use super::{
    ApiState,
    json::RawJson,
    logs::{ApiTags, DEFAULT_LIMIT, MAX_LIMIT},
};
use crate::{
    auth::Session,
    download,
    error::ApiError,
    http_errors::{from_extractor, operation_responses},
    ids::{JobId, StreamId},
    search::{self, Query as SearchQuery},
    wire::{lines::TextFormat, payload::SearchPage},
};

/// The whole-log operations.
pub struct ReadApi;

/// What a download does with ANSI escape sequences in the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum AnsiMode {
    /// As written (colours show in a terminal's `less -R`).
    #[default]
    Keep,
    /// Removed: CSI, OSC (BEL or ST ended) and other escapes.
    Strip,
}

/// A `text/plain` body streamed as it is read.
pub struct TextStream(pub BoxStream<'static, io::Result<Bytes>>);

impl Payload for TextStream {
    const CONTENT_TYPE: &'static str = "text/plain; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn register(_registry: &mut Registry) {}
}

impl IntoResponse for TextStream {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(Body::from_bytes_stream(self.0))
    }
}

operation_responses! {
    /// Responses of the download operation.
    #[oai(bad_request_handler = "download_bad_request")]
    pub enum DownloadResponse {
        /// Every retained line up to the newest one when the request was accepted, oldest first:
        /// each line's text (after its `ts` and a space with `timestamps=true`), then `\n`.
        #[oai(status = 200)]
        Ok(
            TextStream,
            /// `attachment; filename="<job_id>.log"`.
            #[oai(header = "Content-Disposition")]
            String,
            /// Always `no-store`: the log is private to the job's owner.
            #[oai(header = "Cache-Control")]
            String,
            /// Always `nosniff`.
            #[oai(header = "X-Content-Type-Options")]
            String,
            /// The id of the last line in the body (absent when it is empty): follow on live from
            /// it with `Last-Event-ID`.
            #[oai(header = "Buildlogs-Last-Id")]
            Option<String>,
            /// `true` when lines older than the body's first were trimmed away (absent otherwise).
            #[oai(header = "Buildlogs-Truncated")]
            Option<String>,
        ),
    }
    /// Malformed `job_id` (`invalid_job_id`), `ansi` or `timestamps` (`invalid_query`).
    BadRequest;
    /// Too many open streams and downloads for this user or this instance
    /// (`too_many_streams`); retry after `Retry-After` seconds.
    TooManyRequests;
}

fn download_bad_request(err: poem::Error) -> DownloadResponse {
    from_extractor(&err).into()
}

operation_responses! {
    /// Responses of the search operation.
    #[oai(bad_request_handler = "search_bad_request")]
    pub enum SearchResponse {
        /// A page of matches, oldest first, and where the scan stopped.
        #[oai(status = 200)]
        Ok(
            RawJson<SearchPage>,
            /// Always `no-store`: the page is private to the job's owner.
            #[oai(header = "Cache-Control")]
            String,
        ),
    }
    /// Malformed `job_id` (`invalid_job_id`), `after_id` (`invalid_cursor`), `limit`
    /// (`invalid_limit`), or `q`, `regex`, `case_sensitive` (`invalid_query`: a missing, empty
    /// or too long `q`, or a pattern that does not compile or is too big).
    BadRequest;
}

fn search_bad_request(err: poem::Error) -> SearchResponse {
    from_extractor(&err).into()
}

#[OpenApi(tag = "ApiTags::Logs")]
impl ReadApi {
    /// Download a job's whole log as text
    ///
    /// Every retained line, oldest first, up to and including the newest line when the
    /// request was accepted (`Buildlogs-Last-Id` names it), as `text/plain` attachment
    /// `<job_id>.log`. `ansi=strip` removes ANSI escape sequences; `timestamps=true` puts each
    /// line's `ts` before it. The body is streamed as it is read, and a download in progress
    /// counts against the stream caps (429 past them). A job with no log stream yet has an
    /// empty body.
    #[oai(
        path = "/api/jobs/:job_id/logs/raw",
        method = "get",
        operation_id = "downloadJobLog"
    )]
    async fn download(
        &self,
        session: Session,
        state: Data<&ApiState>,
        /// The job's id: 1-128 characters of `A-Z a-z 0-9 _ -`.
        job_id: Path<JobId>,
        /// `keep` (default) or `strip` the text's ANSI escape sequences.
        ansi: Query<Option<AnsiMode>>,
        /// `true`: each line starts with its `ts` and a space (default `false`).
        timestamps: Query<Option<bool>>,
    ) -> DownloadResponse {
        let job = job_id.0;
        let disposition = format!("attachment; filename=\"{job}.log\"");
        let format = TextFormat {
            timestamps: timestamps.0.unwrap_or(false),
            strip_ansi: ansi.0.unwrap_or_default() == AnsiMode::Strip,
        };
        match download::open(state.streams(), &session.user_id, job, format).await {
            Ok(download) => DownloadResponse::Ok(
                TextStream(download.body),
                disposition,
                "no-store".to_owned(),
                "nosniff".to_owned(),
                download.last_id.map(|id| id.to_string()),
                download.truncated.then(|| "true".to_owned()),
            ),
            Err(err) => err.into(),
        }
    }

    /// Search a job's whole log
    ///
    /// Lines whose text, without its ANSI escape sequences, contains `q` (or, with
    /// `regex=true`, a match of the pattern `q` in the syntax of Rust's `regex` crate), oldest
    /// first from `after_id`. A page stops after `limit` matches or 100,000 lines examined,
    /// and under 1 MiB of JSON; while `has_more`, call again with `after_id = scanned_to`:
    /// every match is reported exactly once. A job with no log stream yet has no matches.
    #[oai(
        path = "/api/jobs/:job_id/logs/search",
        method = "get",
        operation_id = "searchJobLogs"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        session: Session,
        state: Data<&ApiState>,
        /// The job's id: 1-128 characters of `A-Z a-z 0-9 _ -`.
        job_id: Path<JobId>,
        /// What to find: 1-256 characters, a literal (or a pattern with `regex=true`).
        #[oai(validator(min_length = 1, max_length = 256))]
        q: Query<String>,
        /// `true`: `q` is a pattern (matched in time linear in the text). Default `false`.
        regex: Query<Option<bool>>,
        /// `true`: letter case must match. Default `false`.
        case_sensitive: Query<Option<bool>>,
        /// Exclusive: where the scan starts, a stream id `<ms>-<seq>` (usually the previous
        /// page's `scanned_to`). Default: the first retained line.
        after_id: Query<Option<StreamId>>,
        /// Matches per page, 1-500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> SearchResponse {
        let result = async {
            let job = job_id.0;
            let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(ApiError::InvalidLimit);
            }
            let query = SearchQuery::new(
                &q.0,
                regex.0.unwrap_or(false),
                case_sensitive.0.unwrap_or(false),
            )
            .map_err(|err| ApiError::InvalidQuery(err.to_string()))?;
            search::page(
                state.store(),
                &job,
                &session.user_id,
                &query,
                after_id.0,
                limit as usize,
            )
            .await?
            .ok_or(ApiError::JobNotFound)
        };
        match result.await {
            Ok(page) => SearchResponse::Ok(RawJson::new(page), "no-store".to_owned()),
            Err(err) => err.into(),
        }
    }
}
