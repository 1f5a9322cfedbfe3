//! Telemetry at the HTTP edge: tracing set-up, and the middleware that times every response
//! into the engine's metrics registry ([`Metrics`]).

use std::{sync::Arc, time::Instant};

use buildlogs_engine::metrics::Metrics;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

/// Middleware recording `buildlogs_http_request_duration_seconds` with a bounded route label.
pub struct RequestMetrics(pub Arc<Metrics>);

impl<E: Endpoint> Middleware<E> for RequestMetrics {
    type Output = RequestMetricsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestMetricsEndpoint {
            inner,
            metrics: self.0.clone(),
        }
    }
}

pub struct RequestMetricsEndpoint<E> {
    inner: E,
    metrics: Arc<Metrics>,
}

fn route_of(path: &str) -> &'static str {
    match path {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        p if p.starts_with("/docs") => "/docs",
        p if p.starts_with("/api/jobs/") && p.ends_with("/logs/stream") => {
            "/api/jobs/{job_id}/logs/stream"
        }
        p if p.starts_with("/api/jobs/") && p.ends_with("/logs") => "/api/jobs/{job_id}/logs",
        p if p.starts_with("/api/jobs/") && p.ends_with("/logs/raw") => {
            "/api/jobs/{job_id}/logs/raw"
        }
        p if p.starts_with("/api/jobs/") && p.ends_with("/logs/search") => {
            "/api/jobs/{job_id}/logs/search"
        }
        _ => "other",
    }
}

impl<E: Endpoint> Endpoint for RequestMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let route = route_of(req.uri().path());
        let started = Instant::now();
        let result = self.inner.call(req).await.map(IntoResponse::into_response);
        let status = match &result {
            Ok(resp) => resp.status().as_u16(),
            Err(err) => err.status().as_u16(),
        };
        self.metrics
            .observe_request(route, status, started.elapsed().as_secs_f64());
        result
    }
}

/// Installs the global tracing subscriber, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt().with_env_filter(filter).with_target(false).try_init();
}
