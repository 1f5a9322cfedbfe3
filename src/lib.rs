//! buildlogs: live and historical build logs of jobs, served to the jobs' owners.
//!
//! A tour, in the order a request meets it:
//! - [`config`]: the command line and environment (`buildlogs serve --help`).
//! - [`app`]: builds the app from a config and serves it; routes, middleware, shutdown.
//! - [`auth`]: Clerk session tokens (Bearer or `__session` cookie), PEM/JWKS keys.
//! - [`api`]: the two typed operations and their payloads; the OpenAPI document comes from here.
//! - [`stream`]: one viewer's SSE stream: start, resume/`reset`, catch-up, live, `done`.
//! - [`fanout`]: shared per-job live feeds, so Redis work per line does not grow with viewers.
//! - [`store`]: the `LogStore` trait with its Redis and embedded backends; [`writer`] appends
//!   lines in the job runner's exact format.
//! - [`error`]: every error code, its status and its problem+json body.
//! - [`limits`], [`telemetry`], [`ids`]: stream caps, metrics and tracing, strict id parsing.
//! - [`server`]: the connection loop (hyper under the poem endpoint) and its shutdown drain;
//!   [`conn`] lets an idle stream notice that its client has gone.
//! - [`dev`]: `serve --dev`, a throwaway key and a demo job for a local try-out.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod cors;
pub mod dev;
pub mod error;
pub mod fanout;
pub mod history;
pub mod ids;
pub mod limits;
pub mod server;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod wire;
pub mod writer;

pub use app::{App, AppState};
pub use config::Config;
