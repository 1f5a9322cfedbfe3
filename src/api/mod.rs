//! The HTTP API: the typed operations (poem-openapi) and the spec they publish. It speaks to
//! the engine (`history`, `stream`) and the store trait, never to Redis or to sockets.
//!
//! `logs` holds the operations a viewer pages and follows (history, the live stream), `read`
//! those over the whole log (download, search); their payloads are
//! [`crate::wire::payload`]'s types.
//! The document produced here is what `/openapi.json`, `buildlogs openapi` and the committed
//! `openapi/openapi.json` contain.

pub mod errors;
pub mod json;
pub mod logs;
pub mod params;
pub mod read;
pub mod sse;

use poem_openapi::OpenApiService;

pub use logs::LogsApi;
pub use read::ReadApi;

pub const TITLE: &str = "buildlogs";

/// The API service, with its spec, independent of any running state.
pub fn service() -> OpenApiService<(LogsApi, ReadApi), ()> {
    OpenApiService::new((LogsApi, ReadApi), TITLE, env!("CARGO_PKG_VERSION")).description(
        "Live and historical build logs of jobs, for the jobs' owners.\n\n\
         Every `/api` operation takes a Clerk session token: `Authorization: Bearer <jwt>`, or, when \
         no Bearer header is present, the `__session` cookie. Only a job's owner sees it; anyone \
         else gets 404, exactly as if the job did not exist.\n\n\
         Errors are `application/problem+json` (RFC 9457) with a stable `code`.",
    )
}

/// The OpenAPI document as pretty JSON, with a trailing newline (the committed form).
pub fn spec_json() -> String {
    let mut spec = service().spec();
    spec.push('\n');
    spec
}
