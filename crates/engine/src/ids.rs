//! Identifiers that arrive from outside: job ids and Redis stream ids, parsed strictly.
//!
//! Both are validated before any store is touched, so no id can smuggle a key pattern (`*`, `:`)
//! or a Redis range token (`-`, `+`, `(`) into a command.

#[cfg(feature = "openapi")]
pub mod schema;

use std::{fmt, str::FromStr};

/// Longest job id accepted in a URL (contract §1).
pub const MAX_JOB_ID_LEN: usize = 128;

/// A job id: 1–128 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a job id is 1-128 characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidJobId;

impl JobId {
    pub fn parse(raw: &str) -> Result<Self, InvalidJobId> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_JOB_ID_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidJobId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job record hash, as the runner writes it.
    pub fn record_key(&self) -> String {
        format!("job:{}", self.0)
    }

    /// The log stream, as the runner writes it.
    pub fn logs_key(&self) -> String {
        format!("job:{}:logs", self.0)
    }

    /// The Pub/Sub channel of status transitions.
    pub fn events_channel(&self) -> String {
        format!("job:{}:events", self.0)
    }

    /// The job id inside an events channel name, if the name is one.
    pub fn from_events_channel(channel: &str) -> Option<Self> {
        let inner = channel.strip_prefix("job:")?.strip_suffix(":events")?;
        Self::parse(inner).ok()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Redis stream entry id `<ms>-<seq>`, both parts u64. Ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a cursor is a full stream id `<ms>-<seq>`, both parts unsigned 64-bit integers")]
pub struct InvalidStreamId;

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The smallest id greater than this one (saturating at the maximum).
    pub fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => match self.ms.checked_add(1) {
                Some(ms) => Self { ms, seq: 0 },
                None => self,
            },
        }
    }

    /// The greatest id smaller than this one; `None` for `0-0`.
    pub fn prev(self) -> Option<Self> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(Self { ms: self.ms, seq }),
            None => Some(Self {
                ms: self.ms.checked_sub(1)?,
                seq: u64::MAX,
            }),
        }
    }

    /// Parses an id as Redis sends it (`<ms>-<seq>` in ASCII digits), with no allocation.
    pub fn parse_bytes(raw: &[u8]) -> Result<Self, InvalidStreamId> {
        fn part(s: &[u8]) -> Result<u64, InvalidStreamId> {
            if s.is_empty() {
                return Err(InvalidStreamId);
            }
            s.iter().try_fold(0u64, |n, &b| {
                if !b.is_ascii_digit() {
                    return Err(InvalidStreamId);
                }
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(b - b'0')))
                    .ok_or(InvalidStreamId)
            })
        }
        let dash = memchr::memchr(b'-', raw).ok_or(InvalidStreamId)?;
        Ok(Self {
            ms: part(&raw[..dash])?,
            seq: part(&raw[dash + 1..])?,
        })
    }
}

impl FromStr for StreamId {
    type Err = InvalidStreamId;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        fn part(s: &str) -> Result<u64, InvalidStreamId> {
            // u64::from_str accepts a leading '+', which is not a stream id.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidStreamId);
            }
            s.parse().map_err(|_| InvalidStreamId)
        }
        let (ms, seq) = raw.split_once('-').ok_or(InvalidStreamId)?;
        Ok(Self {
            ms: part(ms)?,
            seq: part(seq)?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        for ok in ["a", "abc-DEF_123", &"x".repeat(128)] {
            assert_eq!(JobId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "*", "a:b", "a b", "%2A", "é", "../x", &"x".repeat(129)] {
            assert_eq!(JobId::parse(bad), Err(InvalidJobId), "{bad:?}");
        }
        let id = JobId::parse("abc").unwrap();
        assert_eq!(id.record_key(), "job:abc");
        assert_eq!(id.logs_key(), "job:abc:logs");
        assert_eq!(JobId::from_events_channel(&id.events_channel()), Some(id));
        assert_eq!(JobId::from_events_channel("job:a*b:events"), None);
    }

    #[test]
    fn stream_ids() {
        assert_eq!("0-0".parse(), Ok(StreamId::ZERO));
        assert_eq!(
            "18446744073709551615-18446744073709551615".parse(),
            Ok(StreamId::MAX)
        );
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "+1-1",
            "1-+1",
            "1-1-1",
            "a-1",
            "1-a",
            " 1-1",
            "18446744073709551616-0",
            "$",
            "+",
            "(1-1",
        ] {
            assert_eq!(bad.parse::<StreamId>(), Err(InvalidStreamId), "{bad:?}");
        }
        assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
        assert_eq!(StreamId::new(5, 1).next(), StreamId::new(5, 2));
        assert_eq!(StreamId::new(5, u64::MAX).next(), StreamId::new(6, 0));
        assert_eq!(StreamId::MAX.next(), StreamId::MAX);
        assert_eq!(StreamId::new(6, 0).prev(), Some(StreamId::new(5, u64::MAX)));
        assert_eq!(StreamId::new(5, 2).prev(), Some(StreamId::new(5, 1)));
        assert_eq!(StreamId::ZERO.prev(), None);
        assert_eq!(StreamId::new(17, 3).to_string(), "17-3");
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn stream_ids_round_trip(ms: u64, seq: u64) {
                let id = StreamId::new(ms, seq);
                prop_assert_eq!(id.to_string().parse::<StreamId>(), Ok(id));
                prop_assert_eq!(StreamId::parse_bytes(id.to_string().as_bytes()), Ok(id));
                prop_assert_eq!(id.next().prev(), (id != StreamId::MAX).then_some(id).or(id.prev()));
            }

            #[test]
            fn both_parsers_agree(raw in "[0-9+-]{0,24}|.{0,24}") {
                prop_assert_eq!(StreamId::parse_bytes(raw.as_bytes()), raw.parse::<StreamId>());
            }

            #[test]
            fn stream_id_order_is_redis_order(a: (u64, u64), b: (u64, u64)) {
                prop_assert_eq!(StreamId::new(a.0, a.1).cmp(&StreamId::new(b.0, b.1)), a.cmp(&b));
            }

            #[test]
            fn stream_id_parser_accepts_only_digit_pairs(raw in ".{0,48}") {
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                if let Ok(id) = raw.parse::<StreamId>() {
                    let (ms, seq) = raw.split_once('-').unwrap();
                    prop_assert!(digits(ms) && digits(seq));
                    prop_assert_eq!((id.ms, id.seq), (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap()));
                }
            }

            #[test]
            fn valid_job_ids_are_accepted(raw in "[A-Za-z0-9_-]{1,128}") {
                let id = JobId::parse(&raw).unwrap();
                prop_assert_eq!(id.as_str(), raw.as_str());
            }

            #[test]
            fn job_ids_with_any_other_character_are_refused(
                prefix in "[A-Za-z0-9_-]{0,60}",
                bad in "[^A-Za-z0-9_-]",
                suffix in "[A-Za-z0-9_-]{0,60}",
            ) {
                let raw = format!("{prefix}{bad}{suffix}");
                prop_assert_eq!(JobId::parse(&raw), Err(InvalidJobId));
            }
        }
    }
}
