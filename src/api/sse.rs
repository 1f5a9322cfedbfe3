//! The event-stream payload: frames rendered once and shared.
//!
//! poem-openapi's `EventStream` serialises every item for every viewer. A log line watched by
//! 2,000 viewers is rendered once here (by the feed) and the same bytes go to every socket, so
//! fan-out costs a reference-count increment per viewer, not a JSON encoding. The spec is the
//! same as `EventStream<StreamEvent>`'s: an `text/event-stream` of [`StreamEvent`] items.

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use poem::{Body, IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};

use super::models::StreamEvent;
use crate::server::Detachable;

/// One SSE frame (`event:`, `id:`, `data:` lines and the blank line), ready for the wire.
pub fn render(event: StreamEvent) -> Bytes {
    Bytes::from(event.into_sse().to_string())
}

/// A stream of rendered [`StreamEvent`] frames.
pub struct SseFrames(pub BoxStream<'static, Bytes>);

impl Payload for SseFrames {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(StreamEvent::schema_ref())),
            ..MetaSchema::new_with_format("array", "event-stream")
        }))
    }

    fn register(registry: &mut Registry) {
        StreamEvent::register(registry);
    }
}

impl IntoResponse for SseFrames {
    fn into_response(self) -> Response {
        let mut resp = Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(Body::from_bytes_stream(self.0.map(Ok::<_, std::io::Error>)));
        // A stream lasts as long as its connection: let it leave hyper's buffers behind.
        resp.extensions_mut().insert(Detachable);
        resp
    }
}
