//! Errors at the HTTP edge: each error code's HTTP status ([`HttpStatus`]), the problem+json
//! body ([`Problem`]), [`ApiError`] as a poem response (untyped routes, extractors, through
//! [`HttpError`]) and as the typed responses of the operations, the mapping of poem's extractor
//! failures to it, and [`no_store`], which keeps every error (and every 204) out of caches. The
//! codes and what they mean are the engine's ([`crate::error`]).

use bytes::Bytes;
use poem::http::{HeaderValue, StatusCode, header};
use poem_openapi::Object;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};

/// Each error code's HTTP status.
pub trait HttpStatus {
    /// The status a response with this code carries.
    fn status(self) -> StatusCode;
}

impl HttpStatus for ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::JobNotFound => StatusCode::NOT_FOUND,
            Self::InvalidJobId => StatusCode::BAD_REQUEST,
            Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::InvalidLimit => StatusCode::BAD_REQUEST,
            Self::InvalidQuery => StatusCode::BAD_REQUEST,
            Self::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error body (RFC 9457 problem details) with a stable `code`.
#[derive(Clone, Debug, PartialEq, Eq, Object, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:buildlogs:error:<code>`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub ty: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// What went wrong, for programs: match on this.
    pub code: ErrorCode,
}

impl From<&ApiError> for Problem {
    fn from(err: &ApiError) -> Self {
        let code = err.code();
        Self {
            ty: format!("urn:buildlogs:error:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: err.to_string(),
            code,
        }
    }
}

/// The `application/problem+json` body of an error.
pub fn problem_body(err: &ApiError) -> Bytes {
    Bytes::from(serde_json::to_vec(&Problem::from(err)).expect("a problem is plain strings"))
}

/// An [`ApiError`] as a poem error (what an extractor returns): its problem response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct HttpError(pub ApiError);

const PROBLEM_JSON: &str = "application/problem+json";

/// The problem+json response of an error, with `WWW-Authenticate` on a 401 and `Retry-After`
/// where the error has one, never to be stored by a cache.
pub fn problem_response(err: &ApiError) -> poem::Response {
    let mut builder = poem::Response::builder()
        .status(err.code().status())
        .content_type(PROBLEM_JSON)
        .header(header::CACHE_CONTROL, "no-store");
    if *err == ApiError::Unauthorized {
        builder = builder.header("WWW-Authenticate", "Bearer");
    }
    if let Some(secs) = err.retry_after_secs() {
        builder = builder.header("Retry-After", secs);
    }
    builder.body(problem_body(err))
}

/// `Cache-Control: no-store` on every error (problem+json) and every 204, whichever operation
/// or route made it: an answer to a cookie-authenticated request is that user's alone, and a
/// shared cache must neither keep nor replay it. Applied once, to every response of the app,
/// so the typed responses of operations (whose spec does not list the header) get it too.
pub fn no_store(mut resp: poem::Response) -> poem::Response {
    let problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if problem || resp.status() == StatusCode::NO_CONTENT {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The error behind a request that failed before the handler ran: an extractor's parse
/// failure (mapped by parameter name) or a refused authentication.
pub fn from_extractor(err: &poem::Error) -> ApiError {
    if let Some(HttpError(api)) = err.downcast_ref::<HttpError>() {
        return api.clone();
    }
    if let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        return match param.name {
            "job_id" => ApiError::InvalidJobId,
            "before_id" => ApiError::InvalidCursor("before_id"),
            "after_id" => ApiError::InvalidCursor("after_id"),
            "around_id" => ApiError::InvalidCursor("around_id"),
            "q" => ApiError::InvalidQuery(crate::search::QueryError::Length.to_string()),
            "regex" | "case_sensitive" | "timestamps" => {
                ApiError::InvalidQuery(format!("{} must be true or false", param.name))
            }
            "ansi" => ApiError::InvalidQuery("ansi must be keep or strip".to_owned()),
            "Last-Event-ID" => ApiError::InvalidCursor("Last-Event-ID"),
            "limit" => ApiError::InvalidLimit,
            _ => {
                tracing::warn!(error = %err, "unmapped parameter error");
                ApiError::Internal
            }
        };
    }
    if err.is::<poem_openapi::error::AuthorizationError>() {
        return ApiError::Unauthorized;
    }
    // A path that cannot be percent-decoded (`%FF`): our only path parameter is the job id.
    if err.is::<poem::error::ParsePathError>() || err.is::<poem_openapi::error::ParsePathError>() {
        return ApiError::InvalidJobId;
    }
    match err.status() {
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        status if status.is_client_error() => {
            tracing::debug!(error = %err, %status, "unmapped client error");
            ApiError::BadRequest
        }
        status => {
            tracing::warn!(error = %err, %status, "unmapped request error");
            ApiError::Internal
        }
    }
}

impl poem::error::ResponseError for HttpError {
    fn status(&self) -> StatusCode {
        self.0.code().status()
    }

    fn as_response(&self) -> poem::Response {
        problem_response(&self.0)
    }
}

/// The problem body of `err` as a typed payload.
pub fn problem(err: &ApiError) -> poem_openapi::payload::Json<Problem> {
    poem_openapi::payload::Json(Problem::from(err))
}

/// Declares an operation's response enum: its own variants (the success ones, written out),
/// then the error variants every operation shares, declared once here: `BadRequest` (its
/// description given per operation), `Unauthorized` (with `WWW-Authenticate`), `NotFound`,
/// `TooManyRequests` (with `Retry-After`; only where the operation names it, with its
/// description), `Internal` and `ServiceUnavailable` (with `Retry-After`), in that order. It
/// also implements `From<ApiError>` for the enum by the error's status (from
/// [`HttpStatus`]).
macro_rules! operation_responses {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($own:tt)* }
        $(#[$bad:meta])* BadRequest;
        $($(#[$many:meta])* $too_many:ident;)?
    ) => {
        #[derive(poem_openapi::ApiResponse)]
        $(#[$meta])*
        $vis enum $name {
            $($own)*
            $(#[$bad])*
            #[oai(status = 400, content_type = "application/problem+json")]
            BadRequest(poem_openapi::payload::Json<$crate::http_errors::Problem>),
            /// Missing or invalid session token (`unauthorized`).
            #[oai(status = 401, content_type = "application/problem+json")]
            Unauthorized(
                poem_openapi::payload::Json<$crate::http_errors::Problem>,
                #[oai(header = "WWW-Authenticate")] String,
            ),
            /// No such job, or not yours (`job_not_found`); the two are indistinguishable.
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(poem_openapi::payload::Json<$crate::http_errors::Problem>),
            $(
                $(#[$many])*
                #[oai(status = 429, content_type = "application/problem+json")]
                $too_many(
                    poem_openapi::payload::Json<$crate::http_errors::Problem>,
                    #[oai(header = "Retry-After")] u64,
                ),
            )?
            /// An internal failure (`internal`); details are in the server's log only.
            #[oai(status = 500, content_type = "application/problem+json")]
            Internal(poem_openapi::payload::Json<$crate::http_errors::Problem>),
            /// The log store is down or not answering (`store_unavailable`); retry after `Retry-After` seconds.
            #[oai(status = 503, content_type = "application/problem+json")]
            ServiceUnavailable(
                poem_openapi::payload::Json<$crate::http_errors::Problem>,
                #[oai(header = "Retry-After")] u64,
            ),
        }

        impl From<$crate::error::ApiError> for $name {
            fn from(err: $crate::error::ApiError) -> Self {
                use poem::http::StatusCode;
                use $crate::http_errors::{HttpStatus as _, problem};
                let retry_after = err.retry_after_secs().unwrap_or_default();
                match err.code().status() {
                    StatusCode::BAD_REQUEST => Self::BadRequest(problem(&err)),
                    StatusCode::UNAUTHORIZED => Self::Unauthorized(problem(&err), "Bearer".to_owned()),
                    StatusCode::NOT_FOUND => Self::NotFound(problem(&err)),
                    StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable(problem(&err), retry_after),
                    $(StatusCode::TOO_MANY_REQUESTS => Self::$too_many(problem(&err), retry_after),)?
                    _ => Self::Internal(problem(&$crate::error::ApiError::Internal)),
                }
            }
        }
    };
}
pub(crate) use operation_responses;

#[cfg(test)]
mod tests {
    use poem::IntoResponse;

    use super::*;
    use crate::api::logs::{HistoryResponse, StreamResponse};

    #[test]
    fn every_error_and_every_204_says_no_store() {
        let errors = [
            ApiError::Unauthorized,
            ApiError::InvalidJobId,
            ApiError::JobNotFound,
            ApiError::TooManyStreams {
                retry_after_secs: 1,
            },
            ApiError::StoreUnavailable,
            ApiError::Internal,
        ];
        for err in errors {
            let typed = [
                StreamResponse::from(err.clone()).into_response(),
                HistoryResponse::from(err.clone()).into_response(),
                problem_response(&err),
            ];
            for resp in typed {
                let resp = no_store(resp);
                assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store", "{err:?}");
                assert_eq!(
                    resp.headers()[header::CONTENT_TYPE],
                    PROBLEM_JSON,
                    "{err:?}"
                );
            }
        }
        for code in ErrorCode::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(ApiError::JobNotFound.code().status(), StatusCode::NOT_FOUND);
        let empty = no_store(StreamResponse::NoContent.into_response());
        assert_eq!(empty.status(), StatusCode::NO_CONTENT);
        assert_eq!(empty.headers()[header::CACHE_CONTROL], "no-store");
        // A page keeps its own header.
        let ok = no_store(
            poem::Response::builder()
                .header(header::CACHE_CONTROL, "no-cache")
                .body("x"),
        );
        assert_eq!(ok.headers()[header::CACHE_CONTROL], "no-cache");
    }
}
