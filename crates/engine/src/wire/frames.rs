//! Server-Sent Event frames, rendered once and shared: a log line watched by 2,000 viewers is
//! rendered once (by its feed) and the same bytes go to every socket, so fan-out costs a
//! reference-count increment per viewer, not a JSON encoding.

use bytes::Bytes;
use serde::Serialize;

use super::payload::{LogLine, StreamEvent};

/// One SSE frame (`retry:`, or `id:`, `event:` and `data:` lines), with its blank line.
pub fn frame(event: &StreamEvent) -> Bytes {
    match event {
        StreamEvent::Retry(retry) => Bytes::from(format!("retry: {}\n\n", retry.retry_ms)),
        StreamEvent::Start(start) => message(Some(&start.position), "start", start),
        StreamEvent::Log(line) => log_frame(line),
        StreamEvent::Heartbeat(beat) => message(None, "heartbeat", beat),
        StreamEvent::Done(done) => message(None, "done", done),
        StreamEvent::Reset(reset) => message(None, "reset", reset),
    }
}

/// A `log` event's frame: `id:` is the line's id.
pub fn log_frame(line: &LogLine) -> Bytes {
    message(Some(&line.id), "log", line)
}

fn message(id: Option<&str>, event: &str, data: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(160);
    if let Some(id) = id {
        buf.extend_from_slice(b"id: ");
        buf.extend_from_slice(id.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // JSON escapes every line break, so the payload is always one `data:` line.
    serde_json::to_writer(&mut buf, data).expect("payloads are plain strings and numbers");
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}
