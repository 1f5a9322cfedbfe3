//! What goes on the wire, below both the HTTP layer and the engine: the payloads of both
//! endpoints ([`payload`]; the spec's schemas derive from them), Server-Sent Event frames
//! rendered once and shared ([`sse`]), and the problem+json error body.

pub mod lines;
pub mod payload;
pub mod sse;

use bytes::Bytes;

pub use payload::Problem;

use crate::error::ApiError;

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
