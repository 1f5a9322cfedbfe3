//! A JSON payload serialised straight from the type with serde.
//!
//! poem-openapi's `Json` builds a `serde_json::Value` tree first; for a page of 100 log lines
//! that tree is most of the response's cost. The spec is the same as `Json<T>`'s.

use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::Serialize;

pub struct FastJson<T>(pub T);

impl<T: Type + Serialize + Send> Payload for FastJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for FastJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder()
                .content_type("application/json; charset=utf-8")
                .body(body),
            Err(err) => {
                tracing::error!(error = %err, "serialising a response failed");
                super::errors::problem_response(&crate::error::ApiError::Internal)
            }
        }
    }
}

/// JSON written by the engine itself (a history or search page), published with `T`'s schema.
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
