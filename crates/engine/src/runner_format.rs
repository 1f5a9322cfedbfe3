//! Writing logs and job records exactly as the job runner does (contract §1). Used by the
//! `--dev` demo and the tests; the embedded store receives the same writes as Redis would.

use std::sync::Arc;

use time::{OffsetDateTime, macros::format_description};

use crate::{
    ids::{JobId, StreamId},
    store::{LogStore, StoreResult},
};

pub use crate::store::RUNNER_TTL;

/// The runner's `XADD MAXLEN ~` bound.
pub const RUNNER_MAXLEN: usize = 50_000;
/// The runner caps `text` at this many characters, then appends [`TRUNCATION_MARK`].
pub const MAX_TEXT_CHARS: usize = 2_000;
pub const TRUNCATION_MARK: &str = "...[truncated]";

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
    System,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::System => "system",
        }
    }
}

/// The current time as the runner writes it: `2026-11-24T03:05:57.123456+00:00`.
pub fn runner_timestamp(at: OffsetDateTime) -> String {
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("a UTC timestamp always formats")
}

/// Caps text as the runner does.
pub fn cap_text(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => format!("{}{TRUNCATION_MARK}", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Appends lines and writes job records in the runner's format.
#[derive(Clone)]
pub struct LogWriter {
    store: Arc<dyn LogStore>,
    maxlen: usize,
}

impl LogWriter {
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        Self {
            store,
            maxlen: RUNNER_MAXLEN,
        }
    }

    /// Trims to about `maxlen` entries instead of the runner's 50,000 (tests of trimming).
    pub fn with_maxlen(mut self, maxlen: usize) -> Self {
        self.maxlen = maxlen;
        self
    }

    /// Creates the job record, as the runner does when a job is submitted.
    pub async fn create_job(&self, job: &JobId, user_id: &str, status: &str) -> StoreResult<()> {
        let now = runner_timestamp(OffsetDateTime::now_utc());
        self.store
            .put_job(
                job,
                &[
                    ("user_id", user_id),
                    ("status", status),
                    ("status_message", ""),
                    ("created_at", &now),
                    ("updated_at", &now),
                    ("project_id", "proj_demo"),
                    ("tier", "free"),
                    ("goal", "build the project"),
                ],
            )
            .await
    }

    /// Moves the job to `status` and publishes the transition, as the runner does.
    pub async fn set_status(&self, job: &JobId, status: &str, message: &str) -> StoreResult<()> {
        let now = runner_timestamp(OffsetDateTime::now_utc());
        self.store
            .put_job(
                job,
                &[
                    ("status", status),
                    ("status_message", message),
                    ("updated_at", &now),
                ],
            )
            .await?;
        let event = serde_json::json!({
            "job_id": job.as_str(), "status": status, "message": message, "timestamp": now,
        });
        self.store.publish_event(job, &event.to_string()).await
    }

    /// Appends one line with the runner's fields, text capped as the runner caps it.
    pub async fn append(
        &self,
        job: &JobId,
        source: Source,
        phase: &str,
        text: &str,
    ) -> StoreResult<StreamId> {
        let ts = runner_timestamp(OffsetDateTime::now_utc());
        let text = cap_text(text);
        self.append_fields(
            job,
            &[
                ("ts", &ts),
                ("source", source.as_str()),
                ("text", &text),
                ("phase", phase),
            ],
        )
        .await
    }

    /// Appends an entry with exactly these fields (other writers' entries: odd or missing fields).
    pub async fn append_fields(
        &self,
        job: &JobId,
        fields: &[(&str, &str)],
    ) -> StoreResult<StreamId> {
        self.store
            .append(job, fields, self.maxlen, RUNNER_TTL)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_format() {
        let at = time::macros::datetime!(2026-11-24 03:05:57.123456 UTC);
        assert_eq!(runner_timestamp(at), "2026-11-24T03:05:57.123456+00:00");
    }

    #[test]
    fn text_cap() {
        assert_eq!(cap_text("short"), "short");
        let long = "é".repeat(MAX_TEXT_CHARS + 5);
        let capped = cap_text(&long);
        assert_eq!(
            capped.chars().count(),
            MAX_TEXT_CHARS + TRUNCATION_MARK.len()
        );
        assert!(capped.ends_with(TRUNCATION_MARK));
        assert_eq!(cap_text(&"x".repeat(MAX_TEXT_CHARS)).len(), MAX_TEXT_CHARS);
    }
}
