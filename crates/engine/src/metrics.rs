//! The Prometheus metrics of the service (served at `/metrics` by the HTTP crate): one
//! registry, updated lock-free by the engine and the HTTP layer alike.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Why a request failed authentication (the `reason` label of `buildlogs_auth_failures_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuthFailureReason {
    missing,
    malformed,
    bad_signature,
    bad_alg,
    unknown_kid,
    expired,
    not_yet_valid,
    wrong_issuer,
    wrong_party,
    no_key,
}

impl AuthFailureReason {
    pub const ALL: [Self; 10] = [
        Self::missing,
        Self::malformed,
        Self::bad_signature,
        Self::bad_alg,
        Self::unknown_kid,
        Self::expired,
        Self::not_yet_valid,
        Self::wrong_issuer,
        Self::wrong_party,
        Self::no_key,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: AuthFailureReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    status: u16,
}

/// Every metric the service exports. Shared by reference; all updates are lock-free.
pub struct Metrics {
    registry: Registry,
    pub open_streams: Gauge,
    pub live_jobs: Gauge,
    pub lines_delivered: Counter,
    pub redis_errors: Counter,
    pub streams_rejected: Counter,
    pub slow_viewers_cut: Counter,
    pub stalled_streams_cut: Counter,
    pub partial_puts: Counter,
    pub live_read_failures: Counter,
    pub stalled_responses_reset: Counter,
    pub stalled_connections_closed: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let open_streams = Gauge::default();
        let live_jobs = Gauge::default();
        let lines_delivered = Counter::default();
        let redis_errors = Counter::default();
        let streams_rejected = Counter::default();
        let slow_viewers_cut = Counter::default();
        let stalled_streams_cut = Counter::default();
        let partial_puts = Counter::default();
        let live_read_failures = Counter::default();
        let stalled_responses_reset = Counter::default();
        let stalled_connections_closed = Counter::default();
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        // Every reason is exported from the start, at zero, so dashboards see the full set.
        for reason in AuthFailureReason::ALL {
            let _ = auth_failures.get_or_create(&ReasonLabel { reason });
        }
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        registry.register(
            "buildlogs_open_streams",
            "Open log streams (SSE responses) and downloads in progress on this instance",
            open_streams.clone(),
        );
        registry.register(
            "buildlogs_live_jobs",
            "Jobs this instance is following live (one shared reader feed each)",
            live_jobs.clone(),
        );
        registry.register(
            "buildlogs_lines_delivered",
            "Log lines sent to stream viewers",
            lines_delivered.clone(),
        );
        registry.register(
            "buildlogs_redis_errors",
            "Redis commands that failed or timed out",
            redis_errors.clone(),
        );
        registry.register(
            "buildlogs_streams_rejected",
            "Streams refused with 429 past a stream cap",
            streams_rejected.clone(),
        );
        registry.register(
            "buildlogs_slow_viewers_disconnected",
            "Streams ended because the viewer fell too far behind",
            slow_viewers_cut.clone(),
        );
        registry.register(
            "buildlogs_stalled_streams_disconnected",
            "Streams ended because their client read nothing for the stall limit",
            stalled_streams_cut.clone(),
        );
        registry.register(
            "buildlogs_partial_puts",
            "Lines the feed wrote to an idle viewer's socket that took only part of them (the \
             stream's own task sent the rest)",
            partial_puts.clone(),
        );
        registry.register(
            "buildlogs_live_read_failures",
            "Live reads (a reader's blocking read of the streams it follows) that failed or got no \
             reply in time; the reader retries after a back-off",
            live_read_failures.clone(),
        );
        registry.register(
            "buildlogs_stalled_responses_reset",
            "HTTP/2 responses of any kind reset because the client's window stayed closed for the \
             stall limit",
            stalled_responses_reset.clone(),
        );
        registry.register(
            "buildlogs_stalled_connections_closed",
            "HTTP/2 connections closed because every response on them stalled",
            stalled_connections_closed.clone(),
        );
        registry.register(
            "buildlogs_auth_failures",
            "Requests refused authentication, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "buildlogs_http_request_duration_seconds",
            "Time to produce a response's head, by route and status",
            request_duration.clone(),
        );
        Self {
            registry,
            open_streams,
            live_jobs,
            lines_delivered,
            redis_errors,
            streams_rejected,
            slow_viewers_cut,
            stalled_streams_cut,
            partial_puts,
            live_read_failures,
            stalled_responses_reset,
            stalled_connections_closed,
            auth_failures,
            request_duration,
        }
    }

    pub fn auth_failure(&self, reason: AuthFailureReason) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Records how long a response's head took (`buildlogs_http_request_duration_seconds`),
    /// under a bounded route label.
    pub fn observe_request(&self, route: &'static str, status: u16, secs: f64) {
        self.request_duration
            .get_or_create(&RouteLabels { route, status })
            .observe(secs);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
