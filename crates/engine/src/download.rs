//! The whole log as text (contract §9): every retained line up to the newest one when the
//! request was accepted, streamed as it is read.
//!
//! The body reads the store one chunk ahead of what the client has taken: while the client
//! reads slowly the reads wait, and when it goes away the body is dropped with its read in
//! flight (aborted). So memory does not grow with the log: a chunk being written, the next one
//! read ahead ([`paging`] sizes reads by bytes), and one read's reply. A download holds a stream slot (the caps of §6) for as long as its
//! body lives; one with nothing to send ends at once and needs none.

use std::{io, sync::Arc};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use crate::{
    error::ApiError,
    ids::{JobId, StreamId},
    limits::{OpenStream, RETRY_AFTER_SECS, StreamSlot},
    paging,
    store::{EntryRef, LogStore, Scan, Span, job_owned_by},
    viewer::StreamContext,
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
    let first = Read {
        store: ctx.store.clone(),
        job,
        format,
        after: StreamId::ZERO,
        last,
        largest: 0,
    };
    let body = Body {
        ahead: Some(first.spawn()),
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

/// The body's state: the read running ahead of what the client has taken, and what it holds
/// while it lives.
struct Body {
    /// The next chunk's read, started as soon as the previous chunk was handed out, so that
    /// the store's round trip overlaps the writing of that chunk. Dropped with the body, which
    /// aborts it: a departed client stops the reads.
    ahead: Option<AbortOnDropHandle<io::Result<Chunk>>>,
    _slot: StreamSlot,
    _open: OpenStream,
}

impl Body {
    /// The next chunk of text; `None` at the end of the snapshot.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let Some(ahead) = self.ahead.take() else {
            return Ok(None);
        };
        let chunk = ahead
            .await
            .map_err(|_| io::Error::other("a download's read stopped"))??;
        self.ahead = chunk.next.map(Read::spawn);
        Ok((!chunk.text.is_empty()).then_some(chunk.text))
    }
}

/// One read of the snapshot: the lines after `after`, up to `last`.
struct Read {
    store: Arc<dyn LogStore>,
    job: JobId,
    format: TextFormat,
    after: StreamId,
    /// The snapshot's last line.
    last: StreamId,
    /// The largest entry read so far, for sizing this read.
    largest: usize,
}

/// A chunk of the body's text, and the read that comes after it.
struct Chunk {
    text: Bytes,
    next: Option<Read>,
}

impl Read {
    fn spawn(self) -> AbortOnDropHandle<io::Result<Chunk>> {
        AbortOnDropHandle::new(tokio::spawn(self.run()))
    }

    async fn run(self) -> io::Result<Chunk> {
        let span = Span::After {
            after: self.after,
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
        let next = match read_to {
            Some(id) if scanned[0].entries == count && id < self.last => Some(Read {
                after: id,
                largest: self.largest.max(scanned[0].largest),
                ..self
            }),
            _ => None,
        };
        Ok(Chunk {
            text: Bytes::from(text),
            next,
        })
    }
}
