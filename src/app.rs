//! The application: shared state, routes, and the server loop with graceful shutdown.
//!
//! [`App::build`] turns a [`Config`] into a ready app (store, verifier, fan-out hub);
//! [`App::serve`] runs it on a listener until a shutdown future resolves, so tests start the
//! real app on port 0 and stop it when they like.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route,
    endpoint::ToDynEndpoint,
    get, handler,
    http::{Method, StatusCode},
    middleware::Cors,
    web::{Data, Redirect},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{
        self,
        errors::{from_extractor, problem_response},
    },
    auth::{AuthContext, AuthSettings, Verifier},
    config::Config,
    error::ApiError,
    fanout::{Hub, hub::HubSettings},
    limits::StreamLimits,
    server,
    store::{LogStore, StoreError, memory::MemoryStore, redis::RedisStore},
    stream::{StreamContext, StreamSettings},
    telemetry::{AuthFailureReason, Metrics, RequestMetrics},
};

/// How long shutdown waits for connections after ending every stream.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Everything a request handler can reach.
pub struct AppState {
    config: Config,
    verifier: Verifier,
    streams: Arc<StreamContext>,
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &dyn LogStore {
        &*self.streams.store
    }

    /// The store, shared (for the `--dev` demo writer).
    pub fn shared_store(&self) -> Arc<dyn LogStore> {
        self.streams.store.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.streams.metrics
    }

    /// What a stream needs: store, hub, caps, metrics, settings.
    pub fn streams(&self) -> &Arc<StreamContext> {
        &self.streams
    }

    pub fn hub(&self) -> &Hub {
        &self.streams.hub
    }

    /// Cancelled at shutdown: every stream ends, every background task stops.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.streams.shutdown
    }
}

impl AuthContext for AppState {
    fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn record_failure(&self, reason: AuthFailureReason) {
        self.metrics().auth_failure(reason);
    }
}

pub struct App {
    state: Arc<AppState>,
}

impl App {
    /// Builds the app from configuration: Redis when `REDIS_URL` is set, else the embedded store.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn LogStore> = match &config.redis_url {
            Some(url) => {
                let store = RedisStore::new(url, config.redis_pool_size, metrics.clone())
                    .context("REDIS_URL is not usable")?;
                match store.preflight().await {
                    Ok(()) => {}
                    Err(StoreError::Incompatible(why)) => anyhow::bail!(why),
                    // Down for now: start anyway and connect when it is back. Its version is
                    // checked at the next start; the README says which versions work.
                    Err(err) => {
                        tracing::warn!(error = %err, "could not check Redis's version at start")
                    }
                }
                Arc::new(store)
            }
            None => {
                tracing::warn!(
                    "REDIS_URL is not set: using the embedded in-process store (one instance only; \
                     logs live in this process's memory)"
                );
                Arc::new(MemoryStore::new())
            }
        };
        Self::with_store(config, store, metrics).await
    }

    /// Builds the app on a given store (tests use this to reach the embedded store directly).
    pub async fn with_store(
        config: Config,
        store: Arc<dyn LogStore>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        if !config.has_clerk_key() {
            anyhow::bail!(
                "no Clerk key configured: set CLERK_PUBLISHABLE_KEY (or CLERK_JWT_KEY with a PEM public \
                 key, or CLERK_JWKS_URL), or run `buildlogs serve --dev` for a local try-out"
            );
        }
        let verifier = Verifier::new(AuthSettings::from_config(&config)?)?;
        let shutdown = CancellationToken::new();
        let hub = Hub::start(
            store.clone(),
            HubSettings {
                readers: config.redis_live_readers,
                status_poll: Duration::from_secs(config.status_poll_secs),
                max_lag: config.viewer_max_lag,
            },
            metrics.clone(),
            shutdown.clone(),
        )
        .await?;
        let streams = Arc::new(StreamContext {
            store,
            hub,
            limits: Arc::new(StreamLimits::new(
                config.max_streams_per_user,
                config.max_streams,
            )),
            metrics,
            shutdown,
            settings: StreamSettings {
                heartbeat: config.heartbeat(),
            },
        });
        let state = Arc::new(AppState {
            config,
            verifier,
            streams,
        });
        // Fetch the JWKS in the background: the service starts even when it is unreachable.
        let warm = state.clone();
        tokio::spawn(async move { warm.verifier.warm_up().await });
        Ok(Self { state })
    }

    /// Another handle on an already built app (same state, same background tasks).
    pub fn from_state(state: Arc<AppState>) -> Self {
        Self { state }
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Every route, with its middleware.
    pub fn endpoint(&self) -> impl Endpoint<Output = Response> + use<> {
        let service = api::service();
        let docs = service.swagger_ui();
        let auth: Arc<dyn AuthContext> = self.state.clone();
        let cors = (!self.state.config.cors_allowed_origins.is_empty()).then(|| {
            Cors::new()
                .allow_origins(
                    self.state
                        .config
                        .cors_allowed_origins
                        .iter()
                        .map(String::as_str),
                )
                .allow_methods([Method::GET, Method::OPTIONS])
                .allow_headers(["authorization", "last-event-id", "cache-control"])
                .expose_headers(["retry-after"])
                .allow_credentials(true)
                .max_age(600)
        });
        Route::new()
            .nest("/", service)
            .nest("/docs", docs)
            .at("/openapi.json", get(openapi_json))
            .at("/healthz", get(healthz))
            .at("/readyz", get(readyz))
            .at("/metrics", get(metrics_text))
            .at("/", get(index))
            .with_if(cors.is_some(), cors.unwrap_or_default())
            .catch_all_error(
                |err: poem::Error| async move { problem_response(&from_extractor(&err)) },
            )
            .with(RequestMetrics(self.state.metrics().clone()))
            .data(self.state.clone())
            .data(auth)
            .map_to_response()
    }

    /// Serves until `signal` resolves, then ends every stream and stops within the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = self.state.shutdown().clone();
        let watcher = tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: ending open streams");
            token.cancel();
        });
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, store = self.state.store().backend(), "buildlogs listening");
        }
        let result = server::run(
            listener,
            Arc::new(ToDynEndpoint(self.endpoint())),
            server::Settings {
                stall_limit: Duration::from_secs(self.state.config.stream_stall_secs),
            },
            self.state.shutdown().clone(),
            SHUTDOWN_GRACE,
        )
        .await;
        watcher.abort();
        self.state.shutdown().cancel();
        result
    }
}

#[handler]
fn index() -> Redirect {
    Redirect::see_other("/docs")
}

#[handler]
fn openapi_json() -> impl IntoResponse {
    api::spec_json().with_content_type("application/json")
}

#[handler]
fn healthz() -> &'static str {
    "ok\n"
}

#[handler]
async fn readyz(state: Data<&Arc<AppState>>) -> Response {
    match state.store().ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: store unreachable");
            problem_response(&ApiError::StoreUnavailable)
        }
    }
}

#[handler]
fn metrics_text(state: Data<&Arc<AppState>>) -> impl IntoResponse {
    state
        .metrics()
        .render()
        .with_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .with_status(StatusCode::OK)
}
