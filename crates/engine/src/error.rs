//! The one error vocabulary (contract §5): every code the service can answer with and what it
//! means (its title), in one table (`error_codes!` below), and [`ApiError`], the error every
//! layer returns. The spec's `ErrorCode` enum comes from that table; each code's HTTP status
//! and the problem+json body are the HTTP crate's (`buildlogs::api::errors`).

/// Declares [`ErrorCode`] from one table of `Variant = ("code", "Title")` rows.
macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $title:literal),)*) => {
        /// A stable, machine-readable error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
        pub enum ErrorCode {
            $(#[cfg_attr(feature = "openapi", oai(rename = $code))] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &[Self] = &[$(Self::$variant,)*];

            /// The code as it appears in the body's `code` and in `type` (`urn:buildlogs:error:<code>`).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// A short summary of the kind of problem (the body's `title`).
            pub fn title(self) -> &'static str {
                match self { $(Self::$variant => $title,)* }
            }
        }
    };
}

error_codes! {
    Unauthorized = ("unauthorized", "Authentication required"),
    JobNotFound = ("job_not_found", "Job not found"),
    InvalidJobId = ("invalid_job_id", "Invalid job id"),
    InvalidCursor = ("invalid_cursor", "Invalid cursor"),
    InvalidLimit = ("invalid_limit", "Invalid limit"),
    InvalidQuery = ("invalid_query", "Invalid query"),
    TooManyStreams = ("too_many_streams", "Too many streams"),
    StoreUnavailable = ("store_unavailable", "Log store unavailable"),
    Internal = ("internal", "Internal server error"),
    NotFound = ("not_found", "Not found"),
    MethodNotAllowed = ("method_not_allowed", "Method not allowed"),
    BadRequest = ("bad_request", "Bad request"),
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Seconds a client is asked to wait after a 503.
pub const STORE_RETRY_AFTER_SECS: u64 = 2;

/// Every error the API produces; the message is the body's `detail`. Internal causes are
/// logged where they happen, never shown.
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
    #[error("give at most one of before_id, after_id and around_id")]
    CursorConflict,
    #[error("limit must be an integer from 1 to 500")]
    InvalidLimit,
    /// A search or download parameter (`q`, `regex`, `case_sensitive`, `ansi`, `timestamps`).
    #[error("{0}")]
    InvalidQuery(String),
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

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::JobNotFound => ErrorCode::JobNotFound,
            Self::InvalidJobId => ErrorCode::InvalidJobId,
            Self::InvalidCursor(_) | Self::CursorConflict => ErrorCode::InvalidCursor,
            Self::InvalidLimit => ErrorCode::InvalidLimit,
            Self::InvalidQuery(_) => ErrorCode::InvalidQuery,
            Self::TooManyStreams { .. } => ErrorCode::TooManyStreams,
            Self::StoreUnavailable => ErrorCode::StoreUnavailable,
            Self::Internal => ErrorCode::Internal,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::BadRequest => ErrorCode::BadRequest,
        }
    }

    /// The `Retry-After` a response with this error carries, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::TooManyStreams { retry_after_secs } => Some(*retry_after_secs),
            Self::StoreUnavailable => Some(STORE_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Unavailable(_) => Self::StoreUnavailable,
            crate::store::StoreError::Other(detail)
            | crate::store::StoreError::Incompatible(detail) => {
                tracing::error!(%detail, "store error");
                Self::Internal
            }
            crate::store::StoreError::WrongType => {
                tracing::error!("a key of another type reached the API");
                Self::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_errors_map_to_their_code() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                code.as_str()
            );
        }
        assert_eq!(ApiError::JobNotFound.code(), ErrorCode::JobNotFound);
        assert_eq!(
            ApiError::TooManyStreams {
                retry_after_secs: 5
            }
            .retry_after_secs(),
            Some(5)
        );
    }
}
