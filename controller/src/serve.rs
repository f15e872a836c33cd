//! `edgefleet-controller serve`: open the data directory, serve the API until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::analytics::profile::ProfileOptions;
use edgefleet_shared::clock::SharedClock;
use edgefleet_shared::keys::{FileKey, Signer as _};

use crate::api::{AppState, router};
use crate::auth;
use crate::config::{ControllerConfig, DataDir};
use crate::db::Db;
use crate::device_ca::DeviceCa;
use crate::fleet::{Fleet, FleetSettings};
use crate::keyring::KeyRing;
use crate::publish::Publisher;
use crate::registry::Registry;
use crate::rollout::Rollouts;
use crate::store::{ArtifactStore, FsStore, S3Store};
use crate::telemetry::Telemetry;
use crate::{Error, background};

/// What `serve` tells its caller once it is listening.
#[derive(Debug, Clone)]
pub struct Started {
    /// Bound address.
    pub addr: SocketAddr,
    /// Base URL of the API (`https://` when TLS is configured).
    pub url: String,
    /// The bootstrap admin token, on the first start only.
    pub admin_token: Option<String>,
}

/// The opened data directory.
#[derive(Debug)]
pub struct Opened {
    /// The database.
    pub db: Db,
    /// Signing keys and trust sets.
    pub keys: Arc<KeyRing>,
    /// The device CA.
    pub ca: Arc<DeviceCa>,
}

/// Opens (creating on first start) the data directory: database, signing key
/// (recorded as trust set 1), device CA.
pub fn open(data: &DataDir, database: &crate::db::Target) -> Result<Opened, Error> {
    create_private_dir(&data.root)?;
    let db = Db::connect(database)?;
    let startup = |e: &dyn std::fmt::Display| Error::Startup(e.to_string());
    let first = FileKey::load_or_generate(&data.signing_key()).map_err(|e| startup(&e))?;
    db.call_blocking(|conn| crate::keyring::ensure_first_set(conn, &first, "keys/controller.key"))
        .map_err(|e| startup(&e))?;
    let keys = Arc::new(KeyRing::load(&db, &data.root).map_err(|e| startup(&e))?);
    let ca = Arc::new(DeviceCa::load_or_create(&data.keys()).map_err(|e| startup(&e))?);
    Ok(Opened { db, keys, ca })
}

fn create_private_dir(path: &std::path::Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| Error::Startup(format!("cannot create data dir {}: {e}", path.display())))
}

/// Opens an existing data directory (for the offline commands), refusing one the controller
/// never started with.
pub fn open_existing(data: &DataDir, database: &crate::db::Target) -> Result<Opened, Error> {
    let path = data.signing_key();
    if !path.exists() {
        return Err(Error::Startup(format!(
            "no signing key at {}: start the controller once with this --data-dir",
            path.display()
        )));
    }
    open(data, database)
}

/// The trust file agents are provisioned with: the current trust set (after any rotations).
pub fn trust_file(data: &DataDir, database: &crate::db::Target) -> Result<Vec<u8>, Error> {
    Ok(open_existing(data, database)?.keys.trust_file())
}

/// The device CA of a data directory (created on first use), without opening the database.
pub fn device_ca(data: &DataDir) -> Result<DeviceCa, Error> {
    create_private_dir(&data.root)?;
    DeviceCa::load_or_create(&data.keys()).map_err(|e| Error::Startup(e.to_string()))
}

/// The controller's services, wired together over an opened data directory; [`run`] adds the
/// listener, the broker and the background loops.
#[derive(Debug)]
pub struct Services {
    /// Enrollment, devices, documents.
    pub fleet: Fleet,
    /// Telemetry ingest, drift, retraining.
    pub telemetry: Telemetry,
    /// Models and versions.
    pub registry: Registry,
    /// Staged rollouts.
    pub rollouts: Rollouts,
    /// The TLS client configuration (webhooks, an external broker).
    pub tls: Arc<edgefleet_service::tls::ClientConfig>,
}

/// Builds the services over `opened`, on `clock`'s time; pushes are validated by running
/// `validator validate-model` (the controller binary itself).
pub fn services(
    config: &ControllerConfig,
    data: &DataDir,
    opened: &Opened,
    broker_url: Option<String>,
    clock: SharedClock,
    validator: std::path::PathBuf,
) -> Result<Services, Error> {
    let fleet = Fleet::new(
        opened.db.clone(),
        opened.keys.clone(),
        FleetSettings {
            document_ttl_secs: config.fleet.document_ttl_secs,
            delta_max_share: config.fleet.delta_max_share,
            online_window_secs: config.fleet.online_window_secs,
            mqtt_url: broker_url,
            topic_prefix: config.mqtt.topic_prefix.clone(),
        },
    );
    let tls = edgefleet_service::tls::client_config(config.tls.ca_file.as_deref())
        .map_err(|e| Error::Config(e.to_string()))?;
    let webhooks = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Startup(format!("cannot build the webhook client: {e}")))?;
    let telemetry = Telemetry::new(
        opened.db.clone(),
        config.telemetry.clone(),
        config.retrain.clone(),
        data.snapshots(),
        webhooks,
        clock.clone(),
    );
    let store: Arc<dyn ArtifactStore> = match &config.artifacts.s3 {
        Some(s3) => {
            Arc::new(S3Store::new(s3, config.tls.ca_file.as_deref()).map_err(|e| Error::Config(e.to_string()))?)
        }
        None => Arc::new(FsStore::new(&data.artifacts()).map_err(|e| Error::Startup(e.to_string()))?),
    };
    let registry = Registry::new(
        opened.db.clone(),
        store,
        opened.keys.clone(),
        data.scratch(),
        ProfileOptions {
            bins: config.registry.baseline_bins,
            sample_rows: config.registry.baseline_sample_rows,
            ..ProfileOptions::default()
        },
        crate::validate::sandbox::Validator {
            exe: validator,
            memory_bytes: config.registry.validation_memory_mb << 20,
            timeout: Duration::from_secs(config.registry.validation_timeout_secs),
            budget: crate::validate::Budget { max_tensor_bytes: config.registry.validation_max_tensor_bytes },
        },
    );
    let rollouts = Rollouts::new(opened.db.clone(), fleet.clone(), clock);
    Ok(Services { fleet, telemetry, registry, rollouts, tls })
}

/// A controller in this process without network: no listener, no broker, no background
/// loops. Tests drive its API with `router(state).oneshot(...)`, step its rollouts and judge
/// its telemetry by hand, and move `clock` instead of waiting. Returns the API state and the
/// bootstrap admin token (first start).
pub fn in_process(
    config: &ControllerConfig,
    data: &DataDir,
    admin_preset: Option<String>,
    clock: SharedClock,
    validator: std::path::PathBuf,
) -> Result<(AppState, Option<String>), Error> {
    config.validate()?;
    let opened = open(data, &config.database.target(data.database())?)?;
    let admin = opened.db.call_blocking(|conn| auth::bootstrap_admin(conn, admin_preset))?;
    let Services { fleet, telemetry, registry, rollouts, .. } =
        services(config, data, &opened, None, clock, validator)?;
    let state = AppState {
        db: opened.db,
        publisher: Publisher::new(fleet.clone(), None),
        registry,
        fleet,
        rollouts,
        telemetry,
        ca: opened.ca,
        prometheus: crate::observability::prometheus(),
        secure_cookies: false,
    };
    Ok((state, admin))
}

/// Serves until `shutdown` resolves; `on_started` runs once the socket is bound.
pub async fn run(
    config: ControllerConfig,
    data: DataDir,
    admin_preset: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_started: impl FnOnce(&Started),
) -> Result<(), Error> {
    // The signal handlers first: a SIGTERM right after "listening" must stop us gracefully.
    let Some(shutdown) = edgefleet_service::shutdown::armed(shutdown).await else { return Ok(()) };
    config.validate()?;
    let server_tls = match config.tls.server_files() {
        Some((cert, key)) => {
            Some(edgefleet_service::tls::server_config(cert, key).map_err(|e| Error::Config(e.to_string()))?)
        }
        None => None,
    };
    let opened = open(&data, &config.database.target(data.database())?)?;
    let (db, keys) = (opened.db.clone(), opened.keys.clone());
    let admin_token = db.call_blocking(|conn| auth::bootstrap_admin(conn, admin_preset))?;
    tracing::info!(key_id = %keys.key_id(), trust_version = keys.version(), data_dir = %data.root.display(),
        "Controller data opened.");
    // The broker: an external one by URL, else the embedded one (unless disabled). The
    // controller's own client reaches the embedded broker on its internal loopback listener.
    let BrokerSetup { broker, advertised, embedded } = match (config.mqtt.enabled, &config.mqtt.url, config.mqtt.listen)
    {
        (false, ..) | (true, None, None) => BrokerSetup { broker: None, advertised: None, embedded: None },
        (true, Some(url), _) => BrokerSetup {
            broker: Some(crate::mqtt::Broker::external(url, &config.mqtt)?),
            advertised: Some(url.clone()),
            embedded: None,
        },
        (true, None, Some(listen)) => embedded_broker(&config, listen, server_tls.clone())?,
    };
    let clock = edgefleet_shared::clock::system();
    let exe = std::env::current_exe().map_err(|e| Error::Startup(format!("cannot find this binary: {e}")))?;
    let Services { fleet, telemetry, registry, rollouts, tls } =
        services(&config, &data, &opened, advertised, clock.clone(), exe)?;
    registry.store().check().await.map_err(|e| Error::Startup(e.to_string()))?;
    tracing::info!(store = %registry.store().describe(), "Artifact store ready.");
    #[cfg(feature = "embedded-broker")]
    if let Some(started) = embedded {
        started.open_gate(fleet.clone(), &config.mqtt.topic_prefix)?;
    }
    #[cfg(not(feature = "embedded-broker"))]
    if let Some(never) = embedded {
        match never {}
    }
    let mqtt = match broker {
        Some(broker) => Some(crate::mqtt::Mqtt::connect(
            broker,
            &config.mqtt.client_id,
            &config.mqtt.topic_prefix,
            fleet.clone(),
            telemetry.clone(),
            Some(tls),
            config.tls.ca_file.as_deref(),
        )?),
        None => None,
    };
    let publisher = Publisher::new(fleet.clone(), mqtt);
    // The background loops finish the step they are in when told to stop (a rollout step's
    // documents are published, a judged window's request recorded) and are then awaited.
    let (stop_loops, stopping) = tokio::sync::watch::channel(false);
    let (held_tx, held) = tokio::sync::watch::channel(None);
    let replica = config.server.replica_id.clone().unwrap_or_else(default_replica_id);
    let leaser =
        tokio::spawn(background::hold_lease(db.clone(), replica, config.server.lease_secs, held_tx, stopping.clone()));
    let refresher = tokio::spawn(background::refresh_documents(
        fleet.clone(),
        db.clone(),
        publisher.clone(),
        Duration::from_secs(config.fleet.refresh_interval_secs),
        held.clone(),
        stopping.clone(),
    ));
    let engine = tokio::spawn(background::drive_rollouts(
        rollouts.clone(),
        fleet.clone(),
        publisher.clone(),
        held.clone(),
        stopping.clone(),
    ));
    let judge = tokio::spawn(background::judge_telemetry(telemetry.clone(), held, stopping));
    let state = AppState {
        db,
        registry,
        fleet,
        rollouts,
        telemetry,
        publisher,
        ca: opened.ca.clone(),
        prometheus: crate::observability::prometheus(),
        secure_cookies: server_tls.is_some(),
    };
    let addr = config.server.listen;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Startup(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Error::Startup(e.to_string()))?;
    let scheme = if server_tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %local, scheme, "Controller API listening.");
    on_started(&Started { addr: local, url: format!("{scheme}://{local}"), admin_token });
    let app = router(state, config.server.max_upload_bytes);
    let handle = axum_server::Handle::new();
    let server = {
        let handle = handle.clone();
        let startup = |e: std::io::Error| Error::Startup(format!("cannot serve on {local}: {e}"));
        let service = app.into_make_service();
        match server_tls {
            Some(tls) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                let server = axum_server::from_tcp_rustls(listener, config).map_err(startup)?.handle(handle);
                tokio::spawn(async move { server.serve(service).await })
            }
            None => {
                let server = axum_server::from_tcp(listener).map_err(startup)?.handle(handle);
                tokio::spawn(async move { server.serve(service).await })
            }
        }
    };
    shutdown.await;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(1);
    let _ = stop_loops.send(true);
    handle.graceful_shutdown(Some(grace));
    let served = match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(Error::Startup(format!("HTTP server failed: {e}"))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "HTTP server task failed.");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("Requests still running after the grace period; stopping anyway.");
            Ok(())
        }
    };
    let loops = [("document refresh", refresher), ("rollout engine", engine), ("retrain judge", judge)];
    for (name, task) in loops.into_iter().chain([("background lease", leaser)]) {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!(task = name, "Still busy after the grace period; stopped mid-step.");
            abort.abort();
        }
    }
    if served.is_ok() {
        tracing::info!("Controller stopped.");
    }
    served
}

#[cfg(feature = "embedded-broker")]
type Embedded = crate::mqtt::embedded::EmbeddedBroker;
#[cfg(not(feature = "embedded-broker"))]
type Embedded = std::convert::Infallible;

/// The broker the controller's client uses, the URL agents are given, and the embedded broker
/// when it runs one.
struct BrokerSetup {
    broker: Option<crate::mqtt::Broker>,
    advertised: Option<String>,
    embedded: Option<Embedded>,
}

/// Starts the embedded broker on `listen`: the controller's broker, the URL agents are given,
/// and the broker (its gate opens once the fleet exists).
#[cfg(feature = "embedded-broker")]
fn embedded_broker(
    config: &ControllerConfig,
    listen: SocketAddr,
    tls: Option<Arc<edgefleet_service::tls::ServerConfig>>,
) -> Result<BrokerSetup, Error> {
    let started = crate::mqtt::embedded::start(listen, tls)?;
    let scheme = if started.tls { "mqtts" } else { "mqtt" };
    let public = format!("{scheme}://{}", started.public);
    Ok(BrokerSetup {
        broker: Some(crate::mqtt::Broker::embedded(&started)),
        advertised: Some(config.mqtt.advertise_url.clone().unwrap_or(public)),
        embedded: Some(started),
    })
}

/// Without the `embedded-broker` feature there is no broker to start.
#[cfg(not(feature = "embedded-broker"))]
fn embedded_broker(
    _config: &ControllerConfig,
    listen: SocketAddr,
    _tls: Option<Arc<edgefleet_service::tls::ServerConfig>>,
) -> Result<BrokerSetup, Error> {
    Err(Error::Config(format!(
        "[mqtt] listen = {listen}: this controller is built without the embedded broker (cargo feature \
         embedded-broker); set [mqtt] url to an external broker, or [mqtt] enabled = false"
    )))
}

/// This replica's name when `[server] replica_id` is not set: the host name.
fn default_replica_id() -> String {
    let name = rustix::system::uname();
    let host = name.nodename().to_string_lossy();
    if host.is_empty() { "controller".to_owned() } else { host.into_owned() }
}
