//! `edgefleet-controller`: parses arguments, sets up logging, runs the library.
#![allow(clippy::print_stdout, reason = "stdout is part of the command-line interface")]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgefleet_controller::config::{ControllerConfig, DEFAULT_CONFIG, DataDir};
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
        /// PEM certificate chain: serve HTTPS and MQTT over TLS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Write the trust file agents are provisioned with (this controller's public key).
    PublicKey {
        /// Data directory of the controller.
        #[arg(long)]
        data_dir: PathBuf,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the default configuration file.
    PrintDefaultConfig,
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
        Command::PublicKey { data_dir, out } => public_key(DataDir { root: data_dir }, out),
        Command::Serve { data_dir, config, listen, mqtt_listen, mqtt_url, tls_cert, tls_key } => {
            let overrides = Overrides { listen, mqtt_listen, mqtt_url, tls_cert, tls_key };
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

fn public_key(data: DataDir, out: Option<PathBuf>) -> Result<(), Error> {
    let trust = serve::trust_file(&data)?;
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

/// Flags that override the configuration file.
#[derive(Debug)]
struct Overrides {
    listen: Option<std::net::SocketAddr>,
    mqtt_listen: Option<std::net::SocketAddr>,
    mqtt_url: Option<String>,
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
    if let (Some(cert), Some(key)) = (flags.tls_cert, flags.tls_key) {
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    let preset = std::env::var("EDGEFLEET_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("edgefleet-controller")
        .enable_all()
        .build()
        .map_err(|e| Error::Startup(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve::run(
        config,
        DataDir { root: data_dir },
        preset,
        edgefleet_shared::shutdown::signal(),
        |started| {
            if let Some(token) = &started.admin_token {
                // Printed once, on a line of its own, for the operator (or a script) to capture.
                println!("admin token: {token}");
            }
            println!("edgefleet-controller listening on {}", started.url);
        },
    ))
}
