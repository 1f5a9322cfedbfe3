//! The commands both Redis backends (one Redis, a cluster) send for the runner's keys, built in
//! one place: each touches one key, so each is valid on a cluster too.

use std::time::Duration;

use super::{Fields, Span, StoreError, StoreResult};
use crate::ids::{JobId, StreamId};

/// The record fields buildlogs reads: `user_id`, then `status`.
pub(super) fn job_record(job: &JobId) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(job.record_key()).arg("user_id").arg("status");
    cmd
}

pub(super) fn stream_info(job: &JobId) -> redis::Cmd {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("STREAM").arg(job.logs_key());
    cmd
}

/// Up to `count` entries of `span`, in its order (`XREVRANGE` for `Before`, `XRANGE` for
/// `After`); `None` when the span is empty.
pub(super) fn range(job: &JobId, span: Span, count: usize) -> Option<redis::Cmd> {
    if span.is_empty() {
        return None;
    }
    let mut cmd = match span {
        Span::Before(before) => {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(job.logs_key())
                .arg(before.map_or_else(|| "+".to_owned(), |id| format!("({id}")))
                .arg("-");
            cmd
        }
        Span::After { after, until } => {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(job.logs_key())
                .arg(format!("({after}"))
                .arg(until.map_or_else(|| "+".to_owned(), |id| id.to_string()));
            cmd
        }
    };
    cmd.arg("COUNT").arg(count);
    Some(cmd)
}

/// The runner's append: `XADD … MAXLEN ~ maxlen * field value …`.
/// The id an [`xadd`] replied with.
pub(super) fn added_id(id: &str) -> StoreResult<StreamId> {
    id.parse()
        .map_err(|_| StoreError::Other(format!("XADD returned a bad id {id:?}")))
}

pub(super) fn xadd(job: &JobId, fields: Fields<'_>, maxlen: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(job.logs_key())
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*");
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    cmd
}

/// The runner's expiry refresh of a job's stream.
pub(super) fn expire(job: &JobId, ttl: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("EXPIRE");
    cmd.arg(job.logs_key()).arg(ttl.as_secs());
    cmd
}

pub(super) fn put_job(job: &JobId, fields: Fields<'_>) -> redis::Cmd {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(job.record_key());
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    cmd
}

pub(super) fn publish(job: &JobId, payload: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(job.events_channel()).arg(payload);
    cmd
}
