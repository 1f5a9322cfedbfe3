//! Errors at the HTTP edge: [`ApiError`] as a poem response (untyped routes, extractors) and as
//! the typed responses of the operations, and the mapping of poem's extractor failures to it.

use poem::http::StatusCode;

use crate::{
    error::ApiError,
    wire::{Problem, problem_body},
};

/// The problem+json response of an error, with `WWW-Authenticate` on a 401 and `Retry-After`
/// where the error has one.
pub fn problem_response(err: &ApiError) -> poem::Response {
    let mut builder = poem::Response::builder()
        .status(err.code().status())
        .content_type("application/problem+json");
    if *err == ApiError::Unauthorized {
        builder = builder.header("WWW-Authenticate", "Bearer");
    }
    if let Some(secs) = err.retry_after_secs() {
        builder = builder.header("Retry-After", secs);
    }
    builder.body(problem_body(err))
}

/// The error behind a request that failed before the handler ran: an extractor's parse
/// failure (mapped by parameter name) or a refused authentication.
pub fn from_extractor(err: &poem::Error) -> ApiError {
    if let Some(api) = err.downcast_ref::<ApiError>() {
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

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.code().status()
    }

    fn as_response(&self) -> poem::Response {
        problem_response(self)
    }
}

/// The problem body of `err` as a typed payload.
pub fn problem(err: &ApiError) -> poem_openapi::payload::Json<Problem> {
    poem_openapi::payload::Json(Problem::from(err))
}

/// Implements `From<ApiError>` for an operation's response enum by the error's status (from
/// the one table in [`crate::error`]): its variants `BadRequest`, `Unauthorized` (with
/// `WWW-Authenticate`), `NotFound`, `ServiceUnavailable` and `TooManyRequests` (with
/// `Retry-After`), and `Internal`. An operation without a 429 names no `TooManyRequests`.
macro_rules! error_responses {
    ($resp:ident $(, $too_many:ident)?) => {
        impl From<$crate::error::ApiError> for $resp {
            fn from(err: $crate::error::ApiError) -> Self {
                use poem::http::StatusCode;
                use $crate::api::errors::problem;
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
pub(crate) use error_responses;
