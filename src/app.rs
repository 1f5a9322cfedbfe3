//! The application: shared state, routes, and the server loop with graceful shutdown.
//!
//! [`App::build`] turns a [`Config`] into a ready app (store, verifier, fan-out hub);
//! [`App::serve`] runs it on a listener until a shutdown future resolves, so tests start the
//! real app on port 0 and stop it when they like.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route,
    endpoint::{ToDynEndpoint, make_sync},
    get, handler,
    http::StatusCode,
    web::{Data, Redirect},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    auth::{AuthContext, AuthSettings, Verifier},
    config::Config,
    cors::Cors,
    dev,
    error::ApiError,
    fanout::{Hub, hub::HubSettings},
    http_errors::{from_extractor, no_store, problem_response},
    limits::StreamLimits,
    metrics::{AuthFailureReason, Metrics},
    server,
    store::{LogStore, StoreError, memory::MemoryStore, open_redis},
    telemetry::RequestMetrics,
    viewer::{StreamContext, StreamSettings},
};

/// `buildlogs serve`: binds the listeners, builds the app (with the `--dev` kit when asked) and
/// serves until `signal`.
pub async fn run(
    mut config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kit = if config.dev {
        Some(dev::DevKit::prepare(&mut config)?)
    } else {
        None
    };
    let api = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let addr = api.local_addr().unwrap_or(config.listen_addr);
    let metrics = match config.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?,
        ),
        None => None,
    };
    let mut app = App::build(config).await?;
    if let Some(kit) = &kit {
        app = app.with_viewer(kit.viewer());
    }
    if let Some(kit) = kit {
        kit.start(app.state().streams(), addr).await?;
    }
    app.serve(Listeners { api, metrics }, signal).await?;
    Ok(())
}

/// Resolves at SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

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
    /// `--dev` only: the example viewer at `/viewer/`.
    viewer: Option<Arc<dev::Viewer>>,
}

impl App {
    /// Builds the app from configuration: Redis when `REDIS_URL` is set, else the embedded store.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn LogStore> = match &config.redis_url {
            Some(url) => {
                let store = open_redis(
                    url,
                    config.redis_cluster,
                    config.redis_pool_size,
                    metrics.clone(),
                )
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
                store
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
                #[cfg(feature = "bench-naive")]
                naive: config.live_mode == crate::config::LiveMode::Naive,
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
        Ok(Self {
            state,
            viewer: None,
        })
    }

    /// Another handle on an already built app (same state, same background tasks).
    pub fn from_state(state: Arc<AppState>) -> Self {
        Self {
            state,
            viewer: None,
        }
    }

    /// Serves the example viewer at `/viewer/` (dev mode: the route exists nowhere else).
    pub fn with_viewer(mut self, viewer: dev::Viewer) -> Self {
        self.viewer = Some(Arc::new(viewer));
        self
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Every route, with its middleware.
    pub fn endpoint(&self) -> impl Endpoint<Output = Response> + use<> {
        let service = api::service();
        // Swagger UI's page (1.7 MB: its script, its style and the spec inline) and the spec,
        // each rendered once: every response carries the same buffer, however many are
        // waiting on slow clients at once.
        let docs = static_asset(service.swagger_ui_html(), "text/html; charset=utf-8");
        let spec = static_asset(api::spec_json(), "application/json");
        let auth: Arc<dyn AuthContext> = self.state.clone();
        let cors = (!self.state.config.cors_allowed_origins.is_empty())
            .then(|| Cors::new(&self.state.config.cors_allowed_origins));
        let mut routes = Route::new()
            .nest("/", service)
            .nest("/docs", Route::new().at("/", docs))
            .at("/openapi.json", spec)
            .at("/", get(index));
        routes = ops_routes(routes, self.state.config.metrics_addr.is_none());
        if let Some(viewer) = &self.viewer {
            routes = routes.nest("/viewer", viewer.routes());
        }
        routes
            .catch_all_error(
                |err: poem::Error| async move { problem_response(&from_extractor(&err)) },
            )
            .with_if(cors.is_some(), cors.unwrap_or_else(|| Cors::new(&[])))
            .with(RequestMetrics(self.state.metrics().clone()))
            .data(self.state.clone())
            .data(api::ApiState(self.state.streams().clone()))
            .data(auth)
            .map_to_response()
            .map(|resp| async move { no_store(resp) })
    }

    /// The private operations listener (`METRICS_ADDR`): `/metrics`, `/healthz`, `/readyz`.
    fn ops_endpoint(&self) -> impl Endpoint<Output = Response> + use<> {
        ops_routes(Route::new(), true)
            .catch_all_error(
                |err: poem::Error| async move { problem_response(&from_extractor(&err)) },
            )
            .data(self.state.clone())
            .map_to_response()
    }

    /// Serves until `signal` resolves, then ends every stream and stops within the grace period.
    /// With a metrics listener (`METRICS_ADDR`), `/metrics` is served there and not on the API
    /// listener.
    pub async fn serve(
        self,
        listeners: impl Into<Listeners>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Listeners { api, metrics } = listeners.into();
        let token = self.state.shutdown().clone();
        let watcher = tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: ending open streams");
            token.cancel();
        });
        if let Ok(addr) = api.local_addr() {
            tracing::info!(%addr, store = self.state.store().backend(), "buildlogs listening");
        }
        let settings = server::Settings {
            stall_limit: Duration::from_secs(self.state.config.stream_stall_secs),
            idle_timeout: Duration::from_secs(self.state.config.idle_timeout_secs),
            stalled: self.state.metrics().stalled_streams_cut.clone(),
            partial_puts: self.state.metrics().partial_puts.clone(),
            reset_responses: self.state.metrics().stalled_responses_reset.clone(),
            stalled_connections: self.state.metrics().stalled_connections_closed.clone(),
            stream_send_buffer: (self.state.config.stream_send_buffer > 0)
                .then_some(self.state.config.stream_send_buffer),
        };
        let ops = metrics.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics, health and readiness listening");
            }
            tokio::spawn(server::run(
                listener,
                Arc::new(ToDynEndpoint(self.ops_endpoint())),
                settings.clone(),
                self.state.shutdown().clone(),
                SHUTDOWN_GRACE,
            ))
        });
        let result = server::run(
            api,
            Arc::new(ToDynEndpoint(self.endpoint())),
            settings,
            self.state.shutdown().clone(),
            SHUTDOWN_GRACE,
        )
        .await;
        watcher.abort();
        self.state.shutdown().cancel();
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        result
    }
}

/// Where the app listens: the API, and optionally a private listener for `/metrics`,
/// `/healthz` and `/readyz` (`METRICS_ADDR`).
pub struct Listeners {
    pub api: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self { api, metrics: None }
    }
}

/// `/healthz` and `/readyz`, and `/metrics` when `with_metrics`.
fn ops_routes(routes: Route, with_metrics: bool) -> Route {
    let routes = routes
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz));
    if with_metrics {
        routes.at("/metrics", get(metrics_text))
    } else {
        routes
    }
}

#[handler]
fn index() -> Redirect {
    Redirect::see_other("/docs")
}

/// A `GET` route answering `body`, one shared buffer, to every request.
fn static_asset(body: String, content_type: &'static str) -> impl Endpoint<Output = Response> {
    let body = Bytes::from(body);
    get(make_sync(move |_| {
        Response::builder()
            .content_type(content_type)
            .body(body.clone())
    }))
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
