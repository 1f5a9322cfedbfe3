//! The event-stream payload of the stream operation: frames rendered by the engine, with the
//! [`StreamEnds`] the connection writing them needs, both in an [`EventStream`] extension for
//! the connection (the response body takes the frames only if the connection does not). The
//! spec is the same as poem-openapi's `EventStream<StreamEvent>`'s: a `text/event-stream` of
//! [`StreamEvent`] items.

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use poem::{Body, IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};

use crate::{
    outlet::{EventStream, Frames, OutletSlot, StreamEnds},
    wire::payload::StreamEvent,
};

/// A stream of rendered [`StreamEvent`] frames, with its ends and its outlet slot.
pub struct SseFrames(
    pub BoxStream<'static, Bytes>,
    pub StreamEnds,
    pub OutletSlot,
);

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
        let frames = Frames::new(self.0);
        let mut resp =
            Response::builder()
                .content_type(Self::CONTENT_TYPE)
                .body(Body::from_bytes_stream(
                    frames.clone().into_body().map(Ok::<_, std::io::Error>),
                ));
        // The connection takes the frames to write them itself, and races its blocked writes
        // against the ends.
        resp.extensions_mut().insert(EventStream {
            frames,
            ends: self.1,
            outlet: self.2,
        });
        resp
    }
}
