//! The naive live design, for the benchmark only (`bench-naive` feature): every viewer runs its
//! own blocking read on a connection of its own and checks its job's status on every loop, as
//! the original service did. Redis work per line then grows with the number of viewers; the
//! benchmark shows by how much, beside the fan-out.

use std::{sync::Arc, time::Duration};

use super::{Batch, Done, Line, Next};
use crate::{
    ids::{JobId, StreamId},
    store::{LiveReader, LogStore},
};

/// Entries per read.
const READ_COUNT: usize = 100;
const READ_BLOCK: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(100);

pub(super) struct NaiveSubscription {
    store: Arc<dyn LogStore>,
    job: JobId,
    reader: Option<Arc<dyn LiveReader>>,
}

impl NaiveSubscription {
    pub(super) fn new(store: Arc<dyn LogStore>, job: JobId) -> Self {
        Self {
            store,
            job,
            reader: None,
        }
    }

    pub(super) async fn next(&mut self, pos: StreamId) -> Next {
        loop {
            let reader = match &self.reader {
                Some(reader) => reader.clone(),
                None => match self.store.live_reader().await {
                    Ok(reader) => self.reader.insert(reader).clone(),
                    Err(_) => {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                },
            };
            let read = reader
                .read(&[(self.job.clone(), pos)], READ_COUNT, READ_BLOCK)
                .await;
            let lines: Vec<Line> = match read {
                Ok(batches) => batches
                    .into_iter()
                    .flat_map(|(_, entries)| entries)
                    .map(Line::render)
                    .collect(),
                Err(_) => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            // The status, on every loop, per viewer.
            if let Ok(records) = self.store.jobs(std::slice::from_ref(&self.job)).await
                && let Some(Some(record)) = records.into_iter().next()
                && record.status.is_terminal()
                && lines.is_empty()
            {
                return Next::Done(Done {
                    status: record.status,
                    last: StreamId::MAX,
                });
            }
            if !lines.is_empty() {
                return Next::Lines(Batch {
                    lines: lines.into(),
                    skip: 0,
                });
            }
        }
    }
}
