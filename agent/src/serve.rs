//! Standalone serving: bind, load the configured models, serve until shutdown, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::ApiShared;
use crate::config::AgentConfig;
use crate::engine::EngineError;
use crate::http::{AppState, router};
use crate::observability;
use crate::repository::Repository;
use crate::shadow::Shadows;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A configured model could not be loaded.
    #[error("model {name:?} failed to load")]
    Model {
        /// Model name.
        name: String,
        /// Cause.
        source: EngineError,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(tonic::transport::Error),
}

/// Where the agent's APIs listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The KServe v2 HTTP API.
    pub http: SocketAddr,
    /// The KServe v2 gRPC API, unless `server.grpc_listen` is off.
    pub grpc: Option<SocketAddr>,
}

/// Serves the configured models until `shutdown` resolves, then stops accepting connections,
/// lets in-flight requests finish (up to `server.shutdown_grace_secs`) and returns.
///
/// The socket is open (and `/v2/health/live` answers) while the models load; `on_listening` is
/// called with the bound address once every model loaded, so its line is printed only by an
/// agent that keeps serving (a model that fails to load ends `run` with the error instead).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(Listening),
) -> Result<(), ServeError> {
    let http = HttpServer::start(&config).await?;
    crate::systemd::spawn_watchdog();
    let repository = http.repository.clone();
    let loading = load_all(&repository, &config);
    tokio::pin!(shutdown);
    let load_result = tokio::select! {
        r = loading => r,
        () = &mut shutdown => Ok(()),
    };
    if load_result.is_ok() && !http.stopping() {
        on_listening(http.listening());
        crate::systemd::ready(&format!("serving {} model(s) on {}", config.models.len(), http.addr));
        shutdown.await;
    }
    crate::systemd::stopping();
    http.drain(Duration::from_secs(config.server.shutdown_grace_secs)).await?;
    load_result
}

/// The KServe HTTP API (and the gRPC one beside it) over a repository, running until drained.
#[derive(Debug)]
pub struct HttpServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// The gRPC server, unless `server.grpc_listen` is off.
    grpc: Option<crate::grpc::GrpcServer>,
    /// The models it serves.
    pub repository: Arc<Repository>,
    /// The shadow versions beside them.
    pub shadows: Arc<Shadows>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Binds `server.listen` (and `server.grpc_listen`) and starts serving an empty repository.
    pub async fn start(config: &AgentConfig) -> Result<Self, ServeError> {
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
        let grpc_listener = match config.server.grpc_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?),
            None => None,
        };
        let (repository, shadows) = (Repository::new(), Shadows::new());
        let state = AppState::new(ApiShared {
            repository: repository.clone(),
            shadows: shadows.clone(),
            prometheus: observability::prometheus(),
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        });
        let (stop, mut stop_rx) = watch::channel(false);
        let grpc = match grpc_listener {
            Some(listener) => {
                let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: local, source })?;
                let server = crate::grpc::GrpcServer::start(listener, state.clone(), stop_rx.clone())
                    .map_err(|source| ServeError::Bind { addr, source })?;
                Some(server)
            }
            None => None,
        };
        let task = tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                // Small request/response pairs: Nagle's delay would dominate their latency.
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router(state))
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(addr = %local, "HTTP API listening.");
        Ok(HttpServer { addr: local, grpc, repository, shadows, stop, task })
    }

    /// Where the APIs listen.
    pub fn listening(&self) -> Listening {
        Listening { http: self.addr, grpc: self.grpc.as_ref().map(|g| g.addr) }
    }

    fn stopping(&self) -> bool {
        shutdown_requested(&self.stop)
    }

    /// Stops accepting connections, lets in-flight requests finish within `grace`, then stops
    /// the models' workers.
    pub async fn drain(self, grace: Duration) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        let late = || {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "Requests still running after the grace period; stopping anyway."
            );
        };
        // A failed server is reported after the other one drained and the models stopped.
        let mut failure = None;
        match tokio::time::timeout_at(deadline, self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!("All connections drained."),
            Ok(Ok(Err(e))) => failure = Some(ServeError::Http(e)),
            Ok(Err(join)) => tracing::error!(error = %join, "HTTP server task failed."),
            Err(_) => late(),
        }
        if let Some(grpc) = self.grpc {
            match tokio::time::timeout_at(deadline, grpc.task).await {
                Ok(Ok(Ok(()))) => tracing::info!("All gRPC calls drained."),
                Ok(Ok(Err(e))) => failure = failure.or(Some(ServeError::Grpc(e))),
                Ok(Err(join)) => tracing::error!(error = %join, "gRPC server task failed."),
                Err(_) => late(),
            }
        }
        stop_models(&self.repository).await;
        failure.map_or(Ok(()), Err)
    }
}

fn shutdown_requested(stop: &watch::Sender<bool>) -> bool {
    *stop.borrow()
}

/// Loads every `[[models]]` entry (standalone serving, and the local models a fleet-mode agent
/// serves beside its fleet-managed ones).
pub(crate) async fn load_all(repository: &Arc<Repository>, config: &AgentConfig) -> Result<(), ServeError> {
    for model in &config.models {
        repository.announce(&model.name, &model.version);
    }
    for model in &config.models {
        repository
            .load(model.source(), &config.backend)
            .await
            .map_err(|source| ServeError::Model { name: model.name.clone(), source })?;
    }
    if config.models.is_empty() {
        tracing::warn!("No models configured; /v2/health/ready stays false.");
    }
    Ok(())
}

/// How long stopping waits for worker threads to finish a run in progress; a slower run is
/// abandoned (the process is exiting). With `server.shutdown_grace_secs`, the telemetry flush
/// (5 s) and the blocking grace (1 s) this bounds the whole stop, which the systemd unit's
/// `TimeoutStopSec` must exceed.
pub const WORKER_STOP_SECS: u64 = 5;

async fn stop_models(repository: &Arc<Repository>) {
    let models = repository.clear();
    let joined = tokio::task::spawn_blocking(move || {
        for model in models {
            // Only the last holder can join the workers; requests still holding the model
            // (past the grace period) let their threads exit once the queue closes.
            if let Ok(mut m) = Arc::try_unwrap(model) {
                m.pool.shutdown();
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(WORKER_STOP_SECS), joined).await.is_err() {
        tracing::warn!(secs = WORKER_STOP_SECS, "An inference was still running; stopping without it.");
    }
}
