//! `edgefleet-controller`: parses arguments, sets up logging, runs the library.
#![allow(clippy::print_stdout, reason = "stdout is part of the command-line interface")]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgefleet_controller::config::{ControllerConfig, DEFAULT_CONFIG, DataDir};
use edgefleet_controller::db::Target;
use edgefleet_controller::{Error, observability, serve};

/// The edgefleet controller.
#[derive(Debug, Parser)]
#[command(name = "edgefleet-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        /// Data directory (database, artifacts, signing key); created on first start.
        #[arg(long)]
        data_dir: PathBuf,
        /// TOML configuration (see print-default-config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address [default: 127.0.0.1:7700].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Embedded MQTT broker address [default: 127.0.0.1:1883].
        #[arg(long, conflicts_with = "mqtt_url")]
        mqtt_listen: Option<std::net::SocketAddr>,
        /// External MQTT broker (`mqtt://host:port` or `mqtts://host:port`) instead of the
        /// embedded one.
        #[arg(long)]
        mqtt_url: Option<String>,
        /// No MQTT at all: agents poll over HTTP.
        #[arg(long, conflicts_with_all = ["mqtt_url", "mqtt_listen"])]
        no_mqtt: bool,
        /// PEM certificate chain: serve HTTPS and MQTT over TLS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Create a new admin token when every admin token is lost, and write it to
    /// `DATA_DIR/admin-token` (mode 0600). Needs write access to the data directory; works
    /// while the controller runs.
    RecoverAdmin {
        /// Data directory of the controller.
        #[arg(long)]
        data_dir: PathBuf,
        /// The configuration, for its `[database]` (default: the data directory's SQLite).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write the trust file agents are provisioned with (the current trust set).
    PublicKey {
        /// Data directory of the controller.
        #[arg(long)]
        data_dir: PathBuf,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The configuration, for its `[database]` (default: the data directory's SQLite).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a new signing key and trust set, signed by the current key; a running controller
    /// delivers it to every device and signs with the new key after the overlap.
    RotateKey {
        /// Data directory of the controller (it may be running).
        #[arg(long)]
        data_dir: PathBuf,
        /// How long the old key still signs for devices that have not taken the new set, in
        /// seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        overlap_secs: u64,
        /// The old key may be compromised: no overlap, and its private key is deleted.
        #[arg(long)]
        revoke: bool,
        /// The configuration, for its `[database]` (default: the data directory's SQLite).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a Mosquitto set-up (config, dynamic-security plugin file, device CA, the
    /// controller's client certificate) in which every client authenticates by certificate and
    /// the controller keeps every device's topic rights.
    MosquittoConfig {
        /// Data directory of the controller (its device CA is used; created if new).
        #[arg(long)]
        data_dir: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Address Mosquitto listens on (TLS).
        #[arg(long, default_value = "0.0.0.0:8883")]
        listen: std::net::SocketAddr,
        /// Mosquitto's server certificate chain (PEM).
        #[arg(long)]
        server_cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        server_key: PathBuf,
        /// Topic prefix.
        #[arg(long, default_value = edgefleet_shared::fleet::DEFAULT_TOPIC_PREFIX)]
        topic_prefix: String,
        /// Mosquitto's dynamic-security plugin (default: found where distributions install it).
        #[arg(long)]
        dynsec_plugin: Option<PathBuf>,
    },
    /// Copy the data directory's artifacts into the S3-compatible bucket of the configuration's
    /// `[artifacts.s3]`, byte for byte and checked against the registry, before the controller
    /// is started with that configuration; objects already there are skipped (run it again after
    /// an interruption).
    CopyArtifacts {
        /// Data directory of the controller (stopped, or it may push meanwhile: copy again after).
        #[arg(long)]
        data_dir: PathBuf,
        /// The configuration naming the bucket.
        #[arg(long)]
        config: PathBuf,
    },
    /// Copy a SQLite controller's database into an empty PostgreSQL one, then point
    /// `[database] url` at it (artifacts are not in the database: see copy-artifacts). Stop the
    /// controller first.
    Migrate {
        /// The SQLite database (`sqlite:DATA_DIR/controller.db`).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database (`postgres://USER@HOST:PORT/DB`); created tables, no rows.
        #[arg(long)]
        to: String,
        /// A file holding the PostgreSQL password, where the URL has none.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Print the default configuration file.
    PrintDefaultConfig,
    /// Validate a pushed model in isolation (run by the controller itself for every push).
    #[command(hide = true)]
    ValidateModel {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        baseline: Option<PathBuf>,
        #[arg(long, requires = "baseline")]
        npy: bool,
        #[arg(long)]
        bins: usize,
        #[arg(long)]
        sample_rows: usize,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        max_tensor_bytes: u64,
        #[arg(long)]
        memory_bytes: u64,
    },
}

const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    observability::init_logging("info");
    let result = match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::PublicKey { data_dir, out, config } => public_key(DataDir { root: data_dir }, out, config.as_deref()),
        Command::RecoverAdmin { data_dir, config } => recover_admin(DataDir { root: data_dir }, config.as_deref()),
        Command::Migrate { from, to, password_file } => migrate(&from, &to, password_file),
        Command::ValidateModel { model, baseline, npy, bins, sample_rows, seed, max_tensor_bytes, memory_bytes } => {
            use edgefleet_controller::validate::{Budget, sandbox};
            let args = sandbox::ChildArgs {
                model,
                baseline: baseline.map(|b| (b, npy)),
                options: edgefleet_controller::analytics::profile::ProfileOptions { bins, sample_rows, seed },
                budget: Budget { max_tensor_bytes },
                memory_bytes,
            };
            println!("{}", serde_json::to_string(&sandbox::run_child(&args)).unwrap_or_default());
            Ok(())
        }
        Command::RotateKey { data_dir, overlap_secs, revoke, config } => {
            rotate_key(DataDir { root: data_dir }, config.as_deref(), overlap_secs, revoke)
        }
        Command::MosquittoConfig { data_dir, out, listen, server_cert, server_key, topic_prefix, dynsec_plugin } => {
            use edgefleet_controller::mqtt::mosquitto;
            let found = match &dynsec_plugin {
                Some(path) => mosquitto::find_plugin(std::slice::from_ref(path)),
                None => mosquitto::find_plugin(mosquitto::PLUGIN_CANDIDATES),
            };
            found.and_then(|plugin| {
                let setup =
                    mosquitto::MosquittoSetup { out, listen, server_cert, server_key, prefix: topic_prefix, plugin };
                mosquitto_config(DataDir { root: data_dir }, &setup)
            })
        }
        Command::CopyArtifacts { data_dir, config } => copy_artifacts(DataDir { root: data_dir }, &config),
        Command::Serve { data_dir, config, listen, mqtt_listen, mqtt_url, no_mqtt, tls_cert, tls_key } => {
            let overrides = Overrides { listen, mqtt_listen, mqtt_url, no_mqtt, tls_cert, tls_key };
            serve_cmd(data_dir, config, overrides)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet-controller: {e}");
            ExitCode::from(if matches!(e, Error::Config(_)) { EXIT_BAD_CONFIG } else { 1 })
        }
    }
}

fn public_key(data: DataDir, out: Option<PathBuf>, config: Option<&std::path::Path>) -> Result<(), Error> {
    let trust = serve::trust_file(&data, &database(&data, config)?)?;
    match out {
        Some(path) => {
            std::fs::write(&path, trust).map_err(|e| Error::Startup(format!("cannot write {}: {e}", path.display())))
        }
        None => {
            print!("{}", String::from_utf8_lossy(&trust));
            Ok(())
        }
    }
}

/// The database a configuration names (the data directory's SQLite without one).
fn database(data: &DataDir, config: Option<&std::path::Path>) -> Result<Target, Error> {
    let mut config = match config {
        Some(path) => ControllerConfig::from_file(path)?,
        None => ControllerConfig::default(),
    };
    database_from_env(&mut config);
    config.database.target(data.database())
}

/// `EDGEFLEET_DATABASE_URL` overrides `[database] url` (containers, tests).
fn database_from_env(config: &mut ControllerConfig) {
    if let Some(url) = std::env::var("EDGEFLEET_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        config.database.url = Some(url);
    }
}

fn migrate(from: &str, to: &str, password_file: Option<PathBuf>) -> Result<(), Error> {
    let from = Target::parse(from).map_err(Error::Config)?;
    let to = edgefleet_controller::config::DatabaseConfig { url: Some(to.to_owned()), password_file }
        .target(PathBuf::new())?;
    let copied = edgefleet_controller::db::copy::copy(&from, &to).map_err(|e| Error::Startup(e.to_string()))?;
    for (table, rows) in &copied.tables {
        println!("{table:<20} {rows:>10} rows");
    }
    println!("copied {} into {}: set [database] url to it and start the controller", from.describe(), to.describe());
    Ok(())
}

fn recover_admin(data: DataDir, config: Option<&std::path::Path>) -> Result<(), Error> {
    let opened = serve::open_existing(&data, &database(&data, config)?)?;
    let token = opened.db.call_blocking(edgefleet_controller::auth::recover_admin)?;
    edgefleet_controller::auth::write_token_file(&data.admin_token(), &token)?;
    println!(
        "a new admin token is in {} (mode 0600): read it, store it, delete the file",
        data.admin_token().display()
    );
    Ok(())
}

fn rotate_key(data: DataDir, config: Option<&std::path::Path>, overlap_secs: u64, revoke: bool) -> Result<(), Error> {
    let opened = serve::open_existing(&data, &database(&data, config)?)?;
    let rotation = edgefleet_controller::keyring::rotate(&opened.db, &data.root, overlap_secs, revoke, "rotate-key")
        .map_err(|e| Error::Startup(e.to_string()))?;
    println!("{}", serde_json::to_string_pretty(&rotation).unwrap_or_default());
    Ok(())
}

fn mosquitto_config(data: DataDir, setup: &edgefleet_controller::mqtt::mosquitto::MosquittoSetup) -> Result<(), Error> {
    // The broker is usually set up before the controller's first start: this creates the data dir.
    let ca = serve::device_ca(&data)?;
    let written = edgefleet_controller::mqtt::mosquitto::write_setup(&ca, setup, "")?;
    println!("wrote {}", written.config.display());
    println!(
        "controller: [mqtt] url = \"mqtts://HOST:{}\", client_cert = \"{}\", client_key = \"{}\", dynamic_security = true",
        setup.listen.port(),
        written.controller_cert.display(),
        written.controller_key.display()
    );
    Ok(())
}

fn copy_artifacts(data: DataDir, path: &std::path::Path) -> Result<(), Error> {
    use edgefleet_controller::store::{ArtifactStore as _, FsStore, S3Store};
    let mut config = ControllerConfig::from_file(path)?;
    database_from_env(&mut config);
    config.validate()?;
    let Some(s3) = config.artifacts.s3.clone() else {
        return Err(Error::Config(format!("{} has no [artifacts.s3] to copy to", path.display())));
    };
    let opened = serve::open_existing(&data, &config.database.target(data.database())?)?;
    let failed = |e: &dyn std::fmt::Display| Error::Startup(e.to_string());
    let from = FsStore::new(&data.artifacts()).map_err(|e| failed(&e))?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| failed(&e))?;
    let report = runtime.block_on(async {
        let to = S3Store::new(&s3, config.tls.ca_file.as_deref()).map_err(|e| Error::Config(e.to_string()))?;
        to.check().await.map_err(|e| failed(&e))?;
        tokio::task::spawn_blocking(move || edgefleet_controller::store::copy(&opened.db, &from, &to))
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))
    })?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(())
}

/// Flags that override the configuration file.
#[derive(Debug)]
struct Overrides {
    listen: Option<std::net::SocketAddr>,
    mqtt_listen: Option<std::net::SocketAddr>,
    mqtt_url: Option<String>,
    no_mqtt: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn serve_cmd(data_dir: PathBuf, config: Option<PathBuf>, flags: Overrides) -> Result<(), Error> {
    let mut config = match config {
        Some(path) => ControllerConfig::from_file(&path)?,
        None => ControllerConfig::default(),
    };
    if let Some(addr) = flags.listen {
        config.server.listen = addr;
    }
    if let Some(addr) = flags.mqtt_listen {
        config.mqtt.listen = Some(addr);
    }
    if flags.mqtt_url.is_some() {
        config.mqtt.url = flags.mqtt_url;
    }
    if flags.no_mqtt {
        config.mqtt.enabled = false;
    }
    if let (Some(cert), Some(key)) = (flags.tls_cert, flags.tls_key) {
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    database_from_env(&mut config);
    let preset = std::env::var("EDGEFLEET_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let from_env = preset.is_some();
    let token_file = DataDir { root: data_dir.clone() }.admin_token();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("edgefleet-controller")
        .enable_all()
        .build()
        .map_err(|e| Error::Startup(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve::run(
        config,
        DataDir { root: data_dir },
        preset,
        edgefleet_service::shutdown::signal(),
        |started| {
            // The secret itself never reaches stdout (and so the journal): a generated token
            // goes to a file only its owner can read.
            match &started.admin_token {
                Some(_) if from_env => println!("admin token: taken from EDGEFLEET_ADMIN_TOKEN"),
                Some(token) => match edgefleet_controller::auth::write_token_file(&token_file, token) {
                    Ok(()) => println!(
                        "admin token: written to {} (mode 0600): read it, store it, delete the file",
                        token_file.display()
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "Cannot write the admin token; recover one with `edgefleet-controller recover-admin`.");
                    }
                },
                None => {}
            }
            println!("edgefleet-controller listening on {}", started.url);
        },
    ))
}
