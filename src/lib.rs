//! buildlogs: live and historical build logs of jobs, served to the jobs' owners.
//!
//! A tour, in the order a request meets it (ARCHITECTURE.md has the diagram and the rules):
//!
//! The HTTP layer
//! - [`server`]: the connection edge. Accepts connections, serves them with hyper under the
//!   poem endpoint, takes an event stream out of hyper to write it itself, ends every stream
//!   on every path (client gone, stalled, token expired, shutdown), and resets every HTTP/2
//!   response that makes no progress.
//! - [`app`]: builds the app from a [`config`] and serves it: routes, [`cors`], metrics,
//!   shutdown. `main.rs` only parses the command line and calls [`app::run`].
//! - [`auth`]: Clerk session tokens (Bearer or `__session` cookie), PEM and JWKS keys.
//! - [`api`]: the typed operations (history, the live stream, download, search) and the
//!   OpenAPI document; they call the engine.
//!
//! The engine (never imports the HTTP layer)
//! - [`history`]: a page of a job's log (before, after or around a line), under a byte bound.
//! - [`download`]: the whole log as text, streamed as it is read, holding a stream slot.
//! - [`search`]: pages of the lines that match a query, through their ANSI codes ([`ansi`]).
//! - [`paging`]: what those three share: store reads sized by bytes, lines collected as the
//!   JSON they go out as.
//! - [`stream`]: one viewer's stream: the pure open decision ([`stream::open::decide`]: 204,
//!   `start` + `done`, or a stream with its `reset`), then the viewer loop.
//! - [`fanout`]: one shared live feed per followed job, so Redis work per line does not grow
//!   with viewers; a viewer's [`fanout::Subscription`] says what comes next.
//! - [`store`]: the `LogStore` trait with its Redis and embedded backends; its `read` hands a
//!   reply's entries to the reader as borrowed [`store::EntryRef`]s (on one Redis through the
//!   lean RESP reader, [`store::resp`]); [`writer`] appends lines in the job runner's exact
//!   format.
//! - [`wire`]: what goes on the wire: payloads (and their schemas), SSE frames rendered once,
//!   the problem body, and the ends of a stream the connection must enforce.
//!
//! Shared by both
//! - [`error`]: every error code with its status and title, in one table.
//! - [`ids`], [`limits`], [`telemetry`]: strict id parsing, stream caps, metrics and tracing.
//! - [`ansi`]: ANSI escape sequences out of a line's text, for downloads and search.
//! - [`gate`]: futures polled only after they woke, for the hot loops of busy streams; each
//!   poll registers the task's waker before it looks whether the inner future woke, so no wake
//!   is lost (the `AtomicWaker` contract).
//! - `sync`: the locks and atomics of the hand-made primitives (gate, channel, `Wire`): std's,
//!   or loom's under `--cfg buildlogs_loom`, where each one's `model` submodule checks them (`scripts/loom`).
//! - [`dev`]: `serve --dev`, a throwaway key and a demo job for a local try-out, and the example
//!   viewer (`@buildlogs/react`) at `/viewer/` with its token route, mounted only in dev mode.
#![forbid(unsafe_code)]
#![allow(rustdoc::private_intra_doc_links)] // the docs are read with --document-private-items

pub mod ansi;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod cors;
pub mod dev;
pub mod download;
pub mod error;
pub mod fanout;
pub mod gate;
pub mod history;
pub mod ids;
pub mod limits;
pub mod paging;
pub mod search;
pub mod server;
pub mod store;
pub mod stream;
mod sync;
pub mod telemetry;
pub mod wire;
pub mod writer;

pub use app::{App, AppState};
pub use config::Config;
