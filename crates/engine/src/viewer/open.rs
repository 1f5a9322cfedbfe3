//! The open decision: what a stream request gets, from the job's record, its stream's metadata
//! and the resume position alone (contract §3). Pure: no I/O, no clock, unit-tested here.
//!
//! | job      | resume                              | answer                                        |
//! |----------|-------------------------------------|-----------------------------------------------|
//! | running  | none                                | stream, live from the stream's last id        |
//! | running  | known id                            | stream from it (`reset: trimmed` if lines after it may be gone) |
//! | running  | past the stream's last id           | stream of every retained line (`reset: unknown_position`, starts at `0-0`) |
//! | finished | none                                | `start` then `done` at once                   |
//! | finished | lines retained after it             | stream of those lines, then `done`            |
//! | finished | nothing retained after it / unknown | 204 No Content                                |
//!
//! Every [`Decision::Stream`] takes a stream slot (the caps of §6); a 204 and an immediate
//! `start` + `done` never do, since they end at once.

use crate::{
    ids::StreamId,
    store::{Job, JobStatus, StreamInfo},
    wire::payload::{FinalStatus, Nullable, ResetData, ResetReason},
};

/// What a stream request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 204: a finished job with nothing after the resume point (a browser stops reconnecting).
    NoContent,
    /// `start` then `done`, and the stream ends: a finished job, connected to live.
    StartThenDone { start: Start, status: FinalStatus },
    /// A stream that sends lines: it needs a slot.
    Stream(Plan),
}

/// The `start` event: the position the stream starts after, and the job's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub position: StreamId,
    pub status: JobStatus,
}

/// How a stream that sends lines runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub start: Start,
    /// Sent right after `start` when the resume point cannot be honoured exactly.
    pub reset: Option<ResetData>,
    /// The live feed reads from here: the stream's last id as seen when the request came.
    pub live_from: StreamId,
    /// The job has finished: send what is retained after the start position, then `done`;
    /// no live feed.
    pub finished: Option<JobStatus>,
}

/// The final status of a terminal job as the `done` event says it.
pub fn final_status(status: &JobStatus) -> FinalStatus {
    if status.as_str() == "failed" {
        FinalStatus::Failed
    } else {
        FinalStatus::Ready
    }
}

/// Decides what a stream request for `job` (already authorised) gets. `info` is `None` when the
/// job has no stream key (never written, or expired).
pub fn decide(job: &Job, info: Option<&StreamInfo>, resume: Option<StreamId>) -> Decision {
    let last_generated = info.map_or(StreamId::ZERO, |i| i.last_generated_id);
    let oldest = || Nullable(info.and_then(|i| i.first_id).map(|id| id.to_string()));
    let terminal = job.status.is_terminal();
    let start = |position| Start {
        position,
        status: job.status.clone(),
    };
    let stream = |position, reset| {
        Decision::Stream(Plan {
            start: start(position),
            reset,
            live_from: last_generated,
            finished: terminal.then(|| job.status.clone()),
        })
    };

    let Some(resume) = resume else {
        return if terminal {
            Decision::StartThenDone {
                start: start(last_generated),
                status: final_status(&job.status),
            }
        } else {
            stream(last_generated, None)
        };
    };

    if info.is_some() && resume > last_generated {
        // A position this stream never had: another job's id, or a stream deleted and written
        // anew. Start over, so that no client drops the lines as older than its position.
        if terminal {
            return Decision::NoContent;
        }
        let reset = ResetData {
            reason: ResetReason::UnknownPosition,
            oldest_id: oldest(),
        };
        return stream(StreamId::ZERO, Some(reset));
    }

    let has_more = info
        .and_then(|i| i.last_id)
        .is_some_and(|last| last > resume);
    if terminal && !has_more {
        return Decision::NoContent;
    }
    let reset = needs_reset(resume, info).then(|| ResetData {
        reason: ResetReason::Trimmed,
        oldest_id: oldest(),
    });
    stream(resume, reset)
}

/// Whether resuming after `resume` may skip lines that are gone (contract §3, `reset`).
pub fn needs_reset(resume: StreamId, info: Option<&StreamInfo>) -> bool {
    let Some(info) = info else {
        // The job exists but its stream has vanished (expired): only "nothing yet" is honourable.
        return resume != StreamId::ZERO;
    };
    let lost_some = info.entries_added > info.length;
    let before_retained = match info.first_id {
        Some(first) => resume < first,
        None => resume < info.last_generated_id,
    };
    (before_retained && lost_some) || info.max_deleted_id > resume
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId::new(ms, seq)
    }

    /// A stream whose retained entries run from `first` to `last` (ms ids), `added` ever added.
    fn info(first: Option<u64>, last: Option<u64>, generated: u64, added: u64) -> StreamInfo {
        let length = match (first, last) {
            (Some(f), Some(l)) => l - f + 1,
            _ => 0,
        };
        StreamInfo {
            length,
            first_id: first.map(|ms| id(ms, 0)),
            last_id: last.map(|ms| id(ms, 0)),
            last_generated_id: id(generated, 0),
            max_deleted_id: StreamId::ZERO,
            entries_added: added,
        }
    }

    fn job(status: &str) -> Job {
        Job {
            user_id: "user_a".into(),
            status: JobStatus(status.into()),
        }
    }

    fn plan(decision: Decision) -> Plan {
        match decision {
            Decision::Stream(plan) => plan,
            other => panic!("expected a stream, got {other:?}"),
        }
    }

    #[test]
    fn first_connect_is_live_from_the_last_id() {
        let intact = info(Some(10), Some(12), 12, 3);
        let p = plan(decide(&job("code"), Some(&intact), None));
        assert_eq!(p.start.position, id(12, 0));
        assert_eq!(p.live_from, id(12, 0));
        assert_eq!((p.reset, p.finished), (None, None));
        // No stream key yet: from 0-0.
        let p = plan(decide(&job("queued"), None, None));
        assert_eq!(p.start.position, StreamId::ZERO);
    }

    #[test]
    fn finished_jobs_end_at_once_or_stream_what_is_left() {
        let intact = info(Some(10), Some(12), 12, 3);
        assert_eq!(
            decide(&job("failed"), Some(&intact), None),
            Decision::StartThenDone {
                start: Start {
                    position: id(12, 0),
                    status: JobStatus("failed".into())
                },
                status: FinalStatus::Failed,
            }
        );
        assert_eq!(
            decide(&job("ready"), Some(&intact), Some(id(12, 0))),
            Decision::NoContent
        );
        assert_eq!(
            decide(&job("ready"), None, Some(id(3, 0))),
            Decision::NoContent
        );
        // Lines left: a stream (it takes a slot), then done.
        let p = plan(decide(&job("ready"), Some(&intact), Some(id(11, 0))));
        assert_eq!(p.start.position, id(11, 0));
        assert_eq!(p.finished, Some(JobStatus("ready".into())));
        // Nothing retained after a trimmed-away resume point: 204 all the same, no reset.
        let emptied = info(None, None, 12, 9);
        assert_eq!(
            decide(&job("ready"), Some(&emptied), Some(id(5, 0))),
            Decision::NoContent
        );
    }

    #[test]
    fn resume_resets_when_lines_after_it_may_be_gone() {
        let trimmed = info(Some(10), Some(12), 12, 9);
        let p = plan(decide(&job("code"), Some(&trimmed), Some(id(5, 0))));
        assert_eq!(p.start.position, id(5, 0));
        assert_eq!(
            p.reset,
            Some(ResetData {
                reason: ResetReason::Trimmed,
                oldest_id: Nullable(Some("10-0".into())),
            })
        );
        let p = plan(decide(&job("code"), Some(&trimmed), Some(id(10, 0))));
        assert_eq!(p.reset, None);
    }

    #[test]
    fn a_position_past_the_end_starts_over_with_every_retained_line() {
        let intact = info(Some(10), Some(12), 12, 3);
        let p = plan(decide(&job("code"), Some(&intact), Some(id(99, 0))));
        assert_eq!(p.start.position, StreamId::ZERO, "start says 0-0");
        assert_eq!(p.live_from, id(12, 0));
        assert_eq!(
            p.reset,
            Some(ResetData {
                reason: ResetReason::UnknownPosition,
                oldest_id: Nullable(Some("10-0".into())),
            })
        );
        // An empty stream that had lines: oldest null.
        let emptied = info(None, None, 12, 9);
        let p = plan(decide(&job("code"), Some(&emptied), Some(id(13, 0))));
        assert_eq!(p.reset.unwrap().oldest_id, Nullable(None));
        // A finished job: nothing after such a position, so 204.
        assert_eq!(
            decide(&job("ready"), Some(&intact), Some(id(99, 0))),
            Decision::NoContent
        );
        // Exactly the last id is a known position.
        let p = plan(decide(&job("code"), Some(&intact), Some(id(12, 0))));
        assert_eq!(p.reset, None);
    }

    #[test]
    fn reset_rule() {
        let mk =
            |length, first: Option<(u64, u64)>, last: (u64, u64), added, deleted: (u64, u64)| {
                StreamInfo {
                    length,
                    first_id: first.map(|(a, b)| id(a, b)),
                    last_id: None,
                    last_generated_id: id(last.0, last.1),
                    max_deleted_id: id(deleted.0, deleted.1),
                    entries_added: added,
                }
            };
        // Nothing lost: never a reset.
        let intact = mk(3, Some((10, 0)), (12, 0), 3, (0, 0));
        assert!(!needs_reset(id(0, 0), Some(&intact)));
        assert!(!needs_reset(id(11, 0), Some(&intact)));
        // Trimmed: resuming before the first retained entry is a reset, after it is not.
        let trimmed = mk(3, Some((10, 0)), (12, 0), 9, (0, 0));
        assert!(needs_reset(id(5, 0), Some(&trimmed)));
        assert!(!needs_reset(id(10, 0), Some(&trimmed)));
        // Emptied by trimming.
        let emptied = mk(0, None, (12, 0), 9, (0, 0));
        assert!(needs_reset(id(5, 0), Some(&emptied)));
        assert!(!needs_reset(id(12, 0), Some(&emptied)));
        // XDEL after the resume point.
        let deleted = mk(3, Some((10, 0)), (12, 0), 4, (11, 5));
        assert!(needs_reset(id(11, 0), Some(&deleted)));
        assert!(!needs_reset(id(11, 5), Some(&deleted)));
        // Vanished stream.
        assert!(needs_reset(id(1, 0), None));
        assert!(!needs_reset(id(0, 0), None));
    }
}
