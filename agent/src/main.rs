//! `edgefleet-agent`: parses arguments, sets up logging, and runs the library.

#![allow(clippy::print_stdout, reason = "stdout is part of the command-line interface")]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use edgefleet_agent::cli::{Cli, Command};
use edgefleet_agent::config::{AgentConfig, DEFAULT_CONFIG};
use edgefleet_agent::{observability, serve, shutdown};

/// `EX_USAGE` from sysexits.h: the configuration or command line is wrong.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    observability::init_logging("info");
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Verify(args) => verify(args),
        Command::Run(args) => launch(args.into_config(), run_fleet),
        Command::Serve(args) => launch(args.into_config(), run_serve),
    }
}

/// Runs a daemon mode: exit 64 for a bad configuration, 1 when it fails, 0 after a clean stop.
fn launch(
    config: Result<AgentConfig, edgefleet_agent::config::ConfigError>,
    mode: fn(AgentConfig) -> anyhow::Result<()>,
) -> ExitCode {
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgefleet-agent: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match mode(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn verify(args: edgefleet_agent::cli::VerifyArgs) -> ExitCode {
    match edgefleet_agent::inspect::verify(&args.into_request()) {
        Ok(v) => {
            let d = &v.document;
            let models: Vec<String> =
                d.desired().iter().map(|m| format!("{} version {}", m.model.name, m.model.version)).collect();
            let models = if models.is_empty() { "no model".to_owned() } else { models.join(", ") };
            println!(
                "verified: {models}, sequence {}, for {}, signed by key {}, expires {}",
                d.sequence,
                d.devices.join(", "),
                d.key_id,
                edgefleet_agent::inspect::rfc3339(d.expires_at)
            );
            for a in &v.artifacts {
                let how = if a.compressed { "compressed transfer and content" } else { "content" };
                println!("artifact {}: ok ({how}, {})", a.name, a.file.display());
            }
            println!("{}", serde_json::to_string_pretty(d).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgefleet-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn runtime(config: &AgentConfig) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.http_threads)
        .thread_name("edgefleet-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Stable lines on stdout so scripts and tests can find ports chosen with :0 (gRPC first: the
/// HTTP line is the last).
fn announce(at: edgefleet_agent::serve::Listening) {
    if let Some(grpc) = at.grpc {
        println!("edgefleet-agent gRPC listening on {grpc}");
    }
    println!("edgefleet-agent listening on http://{}", at.http);
}

/// How long blocking work (a model still loading, a slot being verified) may hold up the exit
/// once the daemon has drained: it is abandoned, not awaited.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn run_serve(config: AgentConfig) -> anyhow::Result<()> {
    let rt = runtime(&config)?;
    let result = rt.block_on(serve::run(config, shutdown::signal(), announce));
    rt.shutdown_timeout(BLOCKING_GRACE);
    Ok(result?)
}

fn run_fleet(config: AgentConfig) -> anyhow::Result<()> {
    let rt = runtime(&config)?;
    let result = rt.block_on(edgefleet_agent::fleet::run(config, shutdown::signal(), announce));
    rt.shutdown_timeout(BLOCKING_GRACE);
    Ok(result?)
}
