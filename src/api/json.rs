//! JSON written by the engine itself (a history or search page, straight from the store's
//! reply), published with the schema of the type it is an instance of.
//!
//! poem-openapi's `Json` builds a `serde_json::Value` tree first; the pages' bytes are written
//! by [`crate::history`] and [`crate::search`] instead, and this payload only carries them.

use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

/// Pre-rendered JSON with `T`'s schema in the spec.
pub struct RawJson<T>(pub Vec<u8>, pub std::marker::PhantomData<T>);

impl<T> RawJson<T> {
    pub fn new(body: Vec<u8>) -> Self {
        Self(body, std::marker::PhantomData)
    }
}

impl<T: Type + Send> Payload for RawJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for RawJson<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(self.0)
    }
}
