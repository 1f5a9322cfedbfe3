//! Search in the whole retained log (contract §10): lines whose text, with its ANSI escape
//! sequences removed, contains `q` or a match of the pattern, oldest first from `after_id`.
//!
//! A page stops after `limit` matches, after [`MAX_EXAMINED`] lines examined, or before a
//! match that would take its JSON past 1 MiB, and says where it stopped (`scanned_to`), so that
//! the next page starts right after it: every match is reported once. Matching runs on the
//! store's bytes as they are read ([`crate::paging`]): one stripped copy of a line's text at
//! a time, and the JSON of the matches.

use regex::bytes::{Regex, RegexBuilder};

use crate::{
    ansi,
    ids::{JobId, StreamId},
    paging::{self, MAX_PAGE_BYTES},
    store::{EntryRef, LogStore, Scan, Span, StoreResult},
    wire::lines::{json_line, json_opt_id},
};

/// Lines one page examines at most, so that every page answers quickly however long the log.
pub const MAX_EXAMINED: usize = 100_000;
/// Longest `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most entries one read takes: what a bare client reads at once.
const READ_CAP: usize = 1000;
/// The size a compiled pattern may reach (the `regex` crate's own limits, in bytes).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// The page's JSON around its matches.
const PAGE_OVERHEAD: usize = 96;

/// Why a query was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("q is required: 1-256 characters")]
    Length,
    #[error("q is not a valid pattern: {0}")]
    Pattern(String),
    #[error("q compiles past the size limit for patterns; make it simpler")]
    TooBig,
}

/// A compiled search: `q` as a literal or as a pattern.
#[derive(Clone, Debug)]
pub struct Query {
    regex: Regex,
}

impl Query {
    pub fn new(q: &str, is_regex: bool, case_sensitive: bool) -> Result<Self, QueryError> {
        let chars = q.chars().count();
        if chars == 0 || chars > MAX_QUERY_CHARS {
            return Err(QueryError::Length);
        }
        let pattern = if is_regex {
            q.to_owned()
        } else {
            regex::escape(q)
        };
        let regex = RegexBuilder::new(&pattern)
            .case_insensitive(!case_sensitive)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|err| match err {
                regex::Error::CompiledTooBig(_) => QueryError::TooBig,
                // The parser's message points at the problem in the pattern; it names nothing
                // of ours.
                other => QueryError::Pattern(first_line(&other.to_string())),
            })?;
        Ok(Self { regex })
    }

    /// Whether the line's text, without its ANSI escape sequences, matches.
    fn matches(&self, text: &[u8], scratch: &mut Vec<u8>) -> bool {
        if memchr::memchr(0x1b, text).is_none() {
            return self.regex.is_match(text);
        }
        scratch.clear();
        ansi::strip_into(text, scratch);
        self.regex.is_match(scratch)
    }
}

/// The error's last line that says what is wrong (regex's messages are multi-line drawings).
fn first_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("invalid pattern")
        .trim_start_matches("error: ")
        .to_owned()
}

/// The matching state of one page, fed entry by entry.
struct Scanner<'q> {
    query: &'q Query,
    limit: usize,
    scratch: Vec<u8>,
    json: Vec<u8>,
    matches: usize,
    examined: usize,
    scanned_to: Option<StreamId>,
    /// The page is complete: later entries are not examined.
    stopped: bool,
    /// An entry after `scanned_to` was seen.
    beyond: bool,
}

impl Scanner<'_> {
    fn take(&mut self, entry: EntryRef<'_>) {
        if self.stopped {
            self.beyond = true;
            return;
        }
        if self.query.matches(entry.text, &mut self.scratch) {
            let before = self.json.len();
            if self.matches > 0 {
                self.json.push(b',');
            }
            json_line(&mut self.json, &entry);
            if self.matches > 0 && self.json.len() + PAGE_OVERHEAD > MAX_PAGE_BYTES {
                // Left for the next page: this line is not examined here.
                self.json.truncate(before);
                self.stopped = true;
                self.beyond = true;
                return;
            }
            self.matches += 1;
        }
        self.examined += 1;
        self.scanned_to = Some(entry.id);
        if self.matches == self.limit || self.examined == MAX_EXAMINED {
            self.stopped = true;
        }
    }
}

/// A page of matches of `query` in `job` after `after` (from the start when `None`), as its
/// JSON; `None` when the job does not exist or is not `owner`'s.
pub async fn page(
    store: &dyn LogStore,
    job: &JobId,
    owner: &str,
    query: &Query,
    after: Option<StreamId>,
    limit: usize,
) -> StoreResult<Option<Vec<u8>>> {
    let mut scanner = Scanner {
        query,
        limit,
        scratch: Vec::new(),
        json: Vec::new(),
        matches: 0,
        examined: 0,
        scanned_to: after,
        stopped: false,
        beyond: false,
    };
    let mut largest = 0;
    let mut first = true;
    let mut exhausted = false;
    while !scanner.stopped && !exhausted {
        let from = scanner.scanned_to.unwrap_or(StreamId::ZERO);
        let span = Span::After {
            after: from,
            until: None,
        };
        let count = paging::read_count(MAX_EXAMINED - scanner.examined + 1, READ_CAP, largest);
        let sink = &mut scanner;
        let mut scan = [Scan {
            span,
            count,
            sink: Box::new(move |e: EntryRef<'_>| sink.take(e)),
        }];
        let (record, scanned) = store.read(job, first, &mut scan).await?;
        drop(scan);
        if first && record.is_none_or(|r| r.user_id != owner) {
            return Ok(None);
        }
        first = false;
        paging::observe(&scanned[0]);
        largest = largest.max(scanned[0].largest);
        exhausted = scanned[0].entries < count || span.is_empty();
    }
    let mut has_more = scanner.beyond || !exhausted;
    if has_more && !scanner.beyond {
        // Stopped on the last entry of a full read: whether more exist takes one more look.
        let mut more = false;
        let flag = &mut more;
        let mut probe = [Scan {
            span: Span::After {
                after: scanner.scanned_to.unwrap_or(StreamId::ZERO),
                until: None,
            },
            count: 1,
            sink: Box::new(move |_: EntryRef<'_>| *flag = true),
        }];
        store.read(job, false, &mut probe).await?;
        drop(probe);
        has_more = more;
    }
    // `scanned_to` names a line this page examined: none when it examined nothing.
    let scanned_to = (scanner.examined > 0)
        .then_some(scanner.scanned_to)
        .flatten();
    let mut out = Vec::with_capacity(scanner.json.len() + PAGE_OVERHEAD);
    out.extend_from_slice(b"{\"matches\":[");
    out.extend_from_slice(&scanner.json);
    out.extend_from_slice(b"],\"scanned_to\":");
    json_opt_id(&mut out, scanned_to);
    out.extend_from_slice(b",\"has_more\":");
    out.extend_from_slice(if has_more { b"true" } else { b"false" });
    out.push(b'}');
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(q: &str, regex: bool, case_sensitive: bool, text: &str) -> bool {
        Query::new(q, regex, case_sensitive)
            .unwrap()
            .matches(text.as_bytes(), &mut Vec::new())
    }

    #[test]
    fn literal_and_pattern_matching_through_colour_codes() {
        assert!(finds(
            "panicked",
            false,
            false,
            "pa\x1b[1mni\x1b[22mcked at x"
        ));
        assert!(finds("PANICKED", false, false, "thread 'main' panicked"));
        assert!(!finds("PANICKED", false, true, "thread 'main' panicked"));
        // A literal's metacharacters are literal.
        assert!(finds("a.b(c)", false, true, "x a.b(c) y"));
        assert!(!finds("a.b(c)", false, true, "x aXbc y"));
        assert!(finds(
            r"error\[E\d{4}\]",
            true,
            true,
            "\x1b[31merror[E0308]\x1b[0m: mismatched"
        ));
        assert!(finds("ÉTÉ", false, false, "un été chaud"));
    }

    #[test]
    fn bad_queries_are_refused_with_what_is_wrong() {
        assert_eq!(
            Query::new("", false, false).unwrap_err(),
            QueryError::Length
        );
        assert_eq!(
            Query::new(&"x".repeat(257), false, false).unwrap_err(),
            QueryError::Length
        );
        assert!(
            Query::new(&"é".repeat(256), false, false).is_ok(),
            "characters, not bytes"
        );
        let QueryError::Pattern(why) = Query::new("a(b", true, false).unwrap_err() else {
            panic!("an unclosed group is a bad pattern");
        };
        assert!(why.contains("unclosed group"), "{why}");
        assert_eq!(
            Query::new(r"\w{1000}", true, false).unwrap_err(),
            QueryError::TooBig
        );
    }
}
