//! The whole log as text (contract §9): every retained line up to the newest one when the
//! request was accepted, streamed as it is read.
//!
//! The body reads the store only when it is asked for more: while the client reads slowly the
//! reads wait, and when it goes away the body is dropped with its read in flight. So memory
//! does not grow with the log: one read's entries ([`paging`] sizes them by bytes) and the
//! chunk made of them. A download holds a stream slot (the caps of §6) for as long as its
//! body lives; one with nothing to send ends at once and needs none.

use std::{io, sync::Arc};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};

use crate::{
    error::ApiError,
    ids::{JobId, StreamId},
    limits::{OpenStream, RETRY_AFTER_SECS, StreamSlot},
    paging,
    store::{EntryRef, LogStore, Scan, Span, job_owned_by},
    stream::StreamContext,
    wire::lines::{TextFormat, text_line},
};

/// Most entries one read takes: what a bare client reads at once.
const READ_CAP: usize = 1000;

/// An accepted download.
pub struct Download {
    /// The id of the last line in the body (`Buildlogs-Last-Id`); `None` for an empty body.
    pub last_id: Option<StreamId>,
    /// Lines older than the first one in the body were trimmed away (`Buildlogs-Truncated`).
    pub truncated: bool,
    /// The body, chunk by chunk. It fails (rather than ends) when the store does or at
    /// shutdown, so that a client never takes a cut body for the whole log.
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

/// Accepts a download of `job` for `user`: ownership (404), the snapshot's end, a slot (429).
pub async fn open(
    ctx: &Arc<StreamContext>,
    user: &str,
    job: JobId,
    format: TextFormat,
) -> Result<Download, ApiError> {
    job_owned_by(&*ctx.store, &job, user)
        .await?
        .ok_or(ApiError::JobNotFound)?;
    let info = ctx.store.stream_info(&job).await?;
    let Some((info, last)) = info.and_then(|i| i.last_id.map(|last| (i, last))) else {
        return Ok(Download {
            last_id: None,
            truncated: false,
            body: stream::empty().boxed(),
        });
    };
    let Some(slot) = ctx.limits.try_acquire(user) else {
        ctx.metrics.streams_rejected.inc();
        return Err(ApiError::TooManyStreams {
            retry_after_secs: RETRY_AFTER_SECS,
        });
    };
    let body = Body {
        store: ctx.store.clone(),
        job,
        format,
        next: Some(StreamId::ZERO),
        last,
        largest: 0,
        _slot: slot,
        _open: OpenStream::new(ctx.metrics.clone()),
    };
    let shutdown = ctx.shutdown.clone();
    // The state is `None` once the body failed: it then ends, its slot released.
    let body = stream::unfold(Some(body), move |body| {
        let shutdown = shutdown.clone();
        async move {
            let mut body = body?;
            tokio::select! {
                chunk = body.next_chunk() => match chunk {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                    Ok(None) => None,
                    Err(err) => Some((Err(err), None)),
                },
                () = shutdown.cancelled() => Some((Err(io::Error::other("shutting down")), None)),
            }
        }
    });
    Ok(Download {
        last_id: Some(last),
        // The stream has lost entries: older ones were trimmed (the runner never deletes).
        truncated: info.entries_added > info.length,
        body: body.boxed(),
    })
}

/// What the body reads from, where it is, and what it holds while it lives.
struct Body {
    store: Arc<dyn LogStore>,
    job: JobId,
    format: TextFormat,
    /// Read after this id next; `None` once the snapshot's last line was read.
    next: Option<StreamId>,
    /// The snapshot's last line.
    last: StreamId,
    largest: usize,
    _slot: StreamSlot,
    _open: OpenStream,
}

impl Body {
    /// The next chunk of text; `None` at the end of the snapshot.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let Some(after) = self.next else {
            return Ok(None);
        };
        let span = Span::After {
            after,
            until: Some(self.last),
        };
        let count = paging::read_count(READ_CAP, READ_CAP, self.largest);
        let mut text = Vec::new();
        let mut read_to = None;
        let format = self.format;
        let (out, to) = (&mut text, &mut read_to);
        let mut scan = [Scan {
            span,
            count,
            sink: Box::new(move |e: EntryRef<'_>| {
                text_line(out, &e, format);
                *to = Some(e.id);
            }),
        }];
        let (_, scanned) = self
            .store
            .read(&self.job, false, &mut scan)
            .await
            .map_err(|err| {
                tracing::warn!(job = %self.job, error = %err, "a download's read failed");
                io::Error::other("the log store failed")
            })?;
        drop(scan);
        paging::observe(&scanned[0]);
        self.largest = self.largest.max(scanned[0].largest);
        self.next = match read_to {
            Some(id) if scanned[0].entries == count && id < self.last => Some(id),
            _ => None,
        };
        Ok(if text.is_empty() {
            None
        } else {
            Some(Bytes::from(text))
        })
    }
}
