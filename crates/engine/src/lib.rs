//! buildlogs-engine: everything of buildlogs below HTTP. It builds without poem, poem-openapi
//! or hyper (the `openapi` feature adds the payloads' schemas, for the HTTP crate's spec);
//! the HTTP crate (`buildlogs`) calls it.
//!
//! A tour, from a request down to the store (ARCHITECTURE.md has the diagram and the rules):
//!
//! What the operations call
//! - [`history`]: a page of a job's log (before, after or around a line), under a byte bound.
//! - [`download`]: the whole log as text, streamed as it is read, holding a stream slot.
//! - [`search`]: pages of the lines that match a query, through their ANSI codes ([`ansi`]).
//! - [`paging`]: what those three share: store reads sized by bytes, lines collected as the
//!   JSON they go out as.
//! - [`viewer`]: one viewer's stream: the pure open decision ([`viewer::open::decide`]: 204,
//!   `start` + `done`, or a stream with its `reset`), then the viewer loop
//!   (`viewer::events`).
//!
//! Live lines and the store
//! - [`fanout`]: one shared live feed per followed job, so Redis work per line does not grow
//!   with viewers; a viewer's [`fanout::Subscription`] says what comes next.
//! - [`store`]: the `LogStore` trait with its Redis (one server or a cluster) and embedded
//!   backends; its `read` hands a reply's entries to the reader as borrowed
//!   [`store::EntryRef`]s (on one Redis through the lean RESP reader, [`store::resp`]).
//! - [`runner_format`]: appends lines and job records in the job runner's exact format (the
//!   embedded store's tests, `--dev`'s demo jobs, the tests and the benchmark).
//!
//! What goes out, and the connection as the engine sees it
//! - [`wire`]: the payloads (and, with `openapi`, their schemas), SSE frames rendered once
//!   ([`wire::frames`]), a log's lines as text and JSON ([`wire::lines`]).
//! - [`outlet`]: the connection an event stream is written to: the [`outlet::Outlet`] its
//!   feed writes live lines to, lent through an [`outlet::OutletSlot`]; [`outlet::Wire`], that
//!   outlet's state machine over any socket that writes without waiting; the stream's
//!   [`outlet::Frames`]; and the [`outlet::StreamEnds`] its connection enforces.
//!
//! Shared
//! - [`error`]: every error code and what it means, in one table; [`error::ApiError`].
//! - [`ids`], [`limits`], [`metrics`]: strict id parsing, stream caps, the metrics registry.
//! - [`ansi`]: ANSI escape sequences out of a line's text, for downloads and search.
//! - `sync`: the locks and atomics of the hand-made primitives (the feed's channel, `Wire`): std's, or loom's under `--cfg buildlogs_loom`, where each one's `model`
//!   submodule checks them (`scripts/loom`).
#![forbid(unsafe_code)]
#![allow(rustdoc::private_intra_doc_links)] // the docs are read with --document-private-items

pub mod ansi;
pub mod download;
pub mod error;
pub mod fanout;
pub mod history;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod outlet;
pub mod paging;
pub mod runner_format;
pub mod search;
pub mod store;
mod sync;
pub mod viewer;
pub mod wire;
