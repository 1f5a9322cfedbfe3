//! What goes on the wire, below both the HTTP layer and the rest of the engine: the payloads
//! of both endpoints ([`payload`]; the spec's schemas derive from them), Server-Sent Event
//! frames rendered once and shared ([`frames`]), and a log's lines as text and as JSON
//! ([`lines`]).

pub mod frames;
pub mod lines;
pub mod payload;
