//! Ids as typed OpenAPI parameters (the `openapi` feature): each publishes the pattern its parser enforces and is parsed
//! once, by the extractor, with no per-request validator.
//!
//! poem-openapi's `pattern` validator compiles its regex on every request; these types give the
//! spec the same `pattern` and check it with the strict parsers of [`crate::ids`] instead. They live here, beside the
//! parsers, because an id type's schema can be implemented only in its own crate.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromParameter, ParseResult, Type},
};

use crate::ids::{JobId, StreamId};

/// The pattern [`JobId::parse`] enforces.
pub const JOB_ID_PATTERN: &str = r"^[A-Za-z0-9_-]{1,128}$";
/// The pattern [`StreamId`]'s parser enforces (each part must also fit in a u64).
pub const STREAM_ID_PATTERN: &str = r"^[0-9]+-[0-9]+$";

fn string_schema(pattern: &'static str) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        pattern: Some(pattern.to_owned()),
        ..MetaSchema::new("string")
    }))
}

/// Implements [`Type`] for a parameter-only id type.
macro_rules! id_type {
    ($ty:ty, $name:literal, $pattern:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                string_schema($pattern)
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}

id_type!(JobId, "job_id", JOB_ID_PATTERN);
id_type!(StreamId, "stream_id", STREAM_ID_PATTERN);

impl ParseFromParameter for JobId {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        JobId::parse(value).map_err(ParseError::custom)
    }
}

impl ParseFromParameter for StreamId {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value.parse().map_err(ParseError::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(pattern: &str) -> impl Fn(&str) -> bool {
        let re = regex::Regex::new(pattern).unwrap();
        move |raw| re.is_match(raw)
    }

    /// The published patterns and the parsers agree on the cases that tell them apart.
    #[test]
    fn patterns_match_the_parsers() {
        let job = matcher(JOB_ID_PATTERN);
        for (raw, ok) in [
            ("a", true),
            ("A-z_9", true),
            (&"x".repeat(128), true),
            (&"x".repeat(129), false),
            ("", false),
            ("a:b", false),
            ("*", false),
            ("é", false),
        ] {
            assert_eq!(JobId::parse(raw).is_ok(), ok, "{raw}");
            assert_eq!(job(raw), ok, "{raw}");
        }
        let id = matcher(STREAM_ID_PATTERN);
        for (raw, ok) in [
            ("0-0", true),
            ("1-2", true),
            ("1", false),
            ("1-", false),
            ("+1-2", false),
            ("a-1", false),
        ] {
            assert_eq!(raw.parse::<StreamId>().is_ok(), ok, "{raw}");
            assert_eq!(id(raw), ok, "{raw}");
        }
    }
}
