//! buildlogs: live and historical build logs of jobs, served to the jobs' owners. This crate
//! is the HTTP layer and the binary; everything below HTTP is the engine crate
//! ([`buildlogs_engine`], re-exported here module by module, so that `buildlogs::store` and
//! the like name the same modules for the tests and the benchmark).
//!
//! A tour, in the order a request meets it (ARCHITECTURE.md has the diagram and the rules):
//!
//! - [`server`]: the connection edge. Accepts connections, serves them with hyper under the
//!   poem endpoint, takes an HTTP/1 event stream out of hyper to write it itself
//!   (`server::socket_writer`), ends every stream on every path (client gone, stalled, token
//!   expired, shutdown), and resets every HTTP/2 response that makes no progress.
//! - [`app`]: builds the app from a [`config`] and serves it: routes, [`cors`], metrics
//!   ([`telemetry`]: the poem middleware and tracing; the registry is the engine's
//!   [`metrics`]), shutdown. `main.rs` only parses the command line and calls [`app::run`].
//! - [`auth`]: Clerk session tokens (Bearer or `__session` cookie), PEM and JWKS keys.
//! - [`api`]: the typed operations (history, the live stream, download, search) and the
//!   OpenAPI document; they call the engine through the state they declare
//!   ([`api::ApiState`]), which the app provides.
//! - [`http_errors`]: each error code's HTTP status, the problem+json body, and errors as
//!   responses (typed, untyped, and poem's own extractor failures), for `api`, `auth` and `app`.
//! - [`dev`]: `serve --dev`, a throwaway key and a demo job for a local try-out, and the example
//!   viewer (`@buildlogs/react`) at `/viewer/` with its token route, mounted only in dev mode.
//!
//! The engine ([`buildlogs_engine`]'s own tour has the details): [`viewer`] (the open decision
//! and the viewer loop), [`history`], [`download`], [`search`], [`paging`], [`fanout`],
//! [`store`], [`runner_format`], [`wire`] (payloads and frames), [`outlet`] (the connection as
//! the engine sees it), [`error`] (the codes), [`ids`], [`limits`], [`metrics`], and [`ansi`].
#![forbid(unsafe_code)]
#![allow(rustdoc::private_intra_doc_links)] // the docs are read with --document-private-items

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod cors;
pub mod dev;
pub mod http_errors;
pub mod server;
pub mod telemetry;

pub use buildlogs_engine::{
    ansi, download, error, fanout, history, ids, limits, metrics, outlet, paging, runner_format,
    search, store, viewer, wire,
};

pub use app::{App, AppState};
pub use config::Config;
