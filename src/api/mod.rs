//! The HTTP API: the typed operations (poem-openapi) and the spec they publish. It speaks to
//! the engine (`history`, `viewer`, `download`, `search`) and the store trait, never to Redis
//! or to sockets; the state it needs is [`ApiState`], which the app provides.
//!
//! `logs` holds the operations a viewer pages and follows (history, the live stream), `read`
//! those over the whole log (download, search); their payloads are
//! [`crate::wire::payload`]'s types.
//! The document produced here is what `/openapi.json`, `buildlogs openapi` and the committed
//! `openapi/openapi.json` contain.

pub mod json;
pub mod logs;
pub mod read;
pub mod sse;

use std::sync::Arc;

use poem_openapi::OpenApiService;

pub use logs::LogsApi;
pub use read::ReadApi;

use crate::{store::LogStore, viewer::StreamContext};

/// What the operations need of the running service, declared here and provided by the app as
/// request data: the engine's stream context (store, hub, caps, metrics, settings).
#[derive(Clone)]
pub struct ApiState(pub Arc<StreamContext>);

impl ApiState {
    /// The log store.
    pub fn store(&self) -> &dyn LogStore {
        &*self.0.store
    }

    /// What a stream or a download needs.
    pub fn streams(&self) -> &Arc<StreamContext> {
        &self.0
    }
}

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
