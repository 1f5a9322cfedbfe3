//! Stream caps: open streams per user and per instance (contract §6), and the open-streams gauge.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::metrics::Metrics;

/// Seconds a refused client is asked to wait.
pub const RETRY_AFTER_SECS: u64 = 5;

struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// Counts open streams; hands out slots while under both caps.
pub struct StreamLimits {
    max_per_user: usize,
    max_total: usize,
    counts: Mutex<Counts>,
}

/// A capped stream's place; released when dropped.
pub struct StreamSlot {
    limits: Arc<StreamLimits>,
    user: String,
}

/// Keeps `buildlogs_open_streams` right for as long as a stream's body lives.
pub struct OpenStream {
    metrics: Arc<Metrics>,
}

impl OpenStream {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.open_streams.inc();
        Self { metrics }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open_streams.dec();
    }
}

impl StreamLimits {
    pub fn new(max_per_user: usize, max_total: usize) -> Self {
        Self {
            max_per_user,
            max_total,
            counts: Mutex::new(Counts {
                total: 0,
                per_user: HashMap::new(),
            }),
        }
    }

    /// A slot for `user`, or `None` past either cap.
    pub fn try_acquire(self: &Arc<Self>, user: &str) -> Option<StreamSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = counts.per_user.get(user).copied().unwrap_or(0);
        if counts.total >= self.max_total || mine >= self.max_per_user {
            return None;
        }
        counts.total += 1;
        counts.per_user.insert(user.to_owned(), mine + 1);
        Some(StreamSlot {
            limits: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_user_and_total() {
        let limits = Arc::new(StreamLimits::new(2, 3));
        let a1 = limits.try_acquire("a").unwrap();
        let _a2 = limits.try_acquire("a").unwrap();
        assert!(limits.try_acquire("a").is_none(), "per-user cap");
        let _b1 = limits.try_acquire("b").unwrap();
        assert!(limits.try_acquire("c").is_none(), "total cap");
        drop(a1);
        assert!(
            limits.try_acquire("c").is_some(),
            "a released slot is reusable"
        );
    }
}
