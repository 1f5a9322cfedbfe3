//! The one error vocabulary: every code the API can return, its HTTP status, and the
//! `application/problem+json` body (RFC 9457) that carries it (contract §5).

use poem::http::StatusCode;
use poem_openapi::{Enum, Object};

/// A stable, machine-readable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    JobNotFound,
    InvalidJobId,
    InvalidCursor,
    InvalidLimit,
    TooManyStreams,
    StoreUnavailable,
    Internal,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::JobNotFound => "job_not_found",
            Self::InvalidJobId => "invalid_job_id",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidLimit => "invalid_limit",
            Self::TooManyStreams => "too_many_streams",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest => "bad_request",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::JobNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidJobId | Self::InvalidCursor | Self::InvalidLimit | Self::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Unauthorized => "Authentication required",
            Self::JobNotFound => "Job not found",
            Self::InvalidJobId => "Invalid job id",
            Self::InvalidCursor => "Invalid cursor",
            Self::InvalidLimit => "Invalid limit",
            Self::TooManyStreams => "Too many streams",
            Self::StoreUnavailable => "Log store unavailable",
            Self::Internal => "Internal server error",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::BadRequest => "Bad request",
        }
    }
}

/// An error body (RFC 9457 problem details) with a stable `code`.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:buildlogs:error:<code>`.
    #[oai(rename = "type")]
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

/// Every error the API produces. Internal causes are logged where they happen, never shown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(
        "a valid Clerk session token is required (Authorization: Bearer <jwt>, or the __session cookie)"
    )]
    Unauthorized,
    #[error("no job with this id exists, or it is not yours")]
    JobNotFound,
    #[error("a job id is 1-128 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidJobId,
    #[error("{0} must be a full stream id `<ms>-<seq>` (two unsigned 64-bit integers)")]
    InvalidCursor(&'static str),
    #[error("limit must be an integer from 1 to 500")]
    InvalidLimit,
    #[error("too many open streams (per user or on this instance); retry later")]
    TooManyStreams { retry_after_secs: u64 },
    #[error("the log store is unavailable; retry shortly")]
    StoreUnavailable,
    #[error("internal server error")]
    Internal,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request is malformed")]
    BadRequest,
}

/// Seconds a client is asked to wait after a 503.
pub const STORE_RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::JobNotFound => ErrorCode::JobNotFound,
            Self::InvalidJobId => ErrorCode::InvalidJobId,
            Self::InvalidCursor(_) => ErrorCode::InvalidCursor,
            Self::InvalidLimit => ErrorCode::InvalidLimit,
            Self::TooManyStreams { .. } => ErrorCode::TooManyStreams,
            Self::StoreUnavailable => ErrorCode::StoreUnavailable,
            Self::Internal => ErrorCode::Internal,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::BadRequest => ErrorCode::BadRequest,
        }
    }

    pub fn problem(&self) -> Problem {
        let code = self.code();
        Problem {
            ty: format!("urn:buildlogs:error:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: self.to_string(),
            code,
        }
    }

    /// The error behind a request that failed before the handler ran: an extractor's parse
    /// failure (mapped by parameter name) or a refused authentication.
    pub fn from_extractor(err: &poem::Error) -> Self {
        if let Some(api) = err.downcast_ref::<ApiError>() {
            return api.clone();
        }
        if let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
            return match param.name {
                "job_id" => Self::InvalidJobId,
                "before_id" => Self::InvalidCursor("before_id"),
                "Last-Event-ID" => Self::InvalidCursor("Last-Event-ID"),
                "limit" => Self::InvalidLimit,
                _ => {
                    tracing::warn!(error = %err, "unmapped parameter error");
                    Self::Internal
                }
            };
        }
        if err.is::<poem_openapi::error::AuthorizationError>() {
            return Self::Unauthorized;
        }
        // A path that cannot be percent-decoded (`%FF`): our only path parameter is the job id.
        if err.is::<poem::error::ParsePathError>()
            || err.is::<poem_openapi::error::ParsePathError>()
        {
            return Self::InvalidJobId;
        }
        match err.status() {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            status if status.is_client_error() => {
                tracing::debug!(error = %err, %status, "unmapped client error");
                Self::BadRequest
            }
            status => {
                tracing::warn!(error = %err, %status, "unmapped request error");
                Self::Internal
            }
        }
    }

    /// A plain poem response with the problem body, for errors outside typed operations.
    pub fn into_poem_response(self) -> poem::Response {
        let problem = self.problem();
        let mut builder = poem::Response::builder()
            .status(self.code().status())
            .content_type("application/problem+json");
        if self == Self::Unauthorized {
            builder = builder.header("WWW-Authenticate", "Bearer");
        }
        let body = serde_json::json!({
            "type": problem.ty, "title": problem.title, "status": problem.status,
            "detail": problem.detail, "code": problem.code.as_str(),
        });
        builder.body(body.to_string())
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.code().status()
    }

    fn as_response(&self) -> poem::Response {
        self.clone().into_poem_response()
    }
}

/// Implements `From<ApiError>` for an operation's response enum, whose error variants are named
/// `BadRequest`, `Unauthorized`, `NotFound`, `ServiceUnavailable`, `Internal`, and optionally
/// `TooManyRequests`.
macro_rules! impl_api_error_response {
    ($resp:ident $(, $too_many:ident)?) => {
        impl From<$crate::error::ApiError> for $resp {
            fn from(err: $crate::error::ApiError) -> Self {
                use $crate::error::ApiError as E;
                let problem = poem_openapi::payload::Json(err.problem());
                match err {
                    E::Unauthorized => Self::Unauthorized(problem, "Bearer".to_owned()),
                    E::JobNotFound | E::NotFound => Self::NotFound(problem),
                    E::InvalidJobId | E::InvalidCursor(_) | E::InvalidLimit | E::BadRequest => Self::BadRequest(problem),
                    E::StoreUnavailable => Self::ServiceUnavailable(problem, $crate::error::STORE_RETRY_AFTER_SECS),
                    $(E::TooManyStreams { retry_after_secs } => Self::$too_many(problem, retry_after_secs),)?
                    _ => Self::Internal(poem_openapi::payload::Json($crate::error::ApiError::Internal.problem())),
                }
            }
        }
    };
}
pub(crate) use impl_api_error_response;

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Unavailable(_) => Self::StoreUnavailable,
            crate::store::StoreError::Other(detail) => {
                tracing::error!(%detail, "store error");
                Self::Internal
            }
        }
    }
}
