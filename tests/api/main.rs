//! Integration tests: the real app over a real `redis-server` (or the embedded store), real
//! RS256 tokens. One binary; shared helpers in `helpers.rs`.

mod architecture;
mod auth;
mod dev_mode;
mod edge;
mod fanout;
mod hardening;
#[allow(dead_code)] // shared with the drills binary, which uses other parts
mod helpers;
mod history;
mod http2;
mod odd_data;
mod ops;
mod read;
mod spec;
mod store_contract;
mod stream;
