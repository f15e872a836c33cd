//! `edgefleet`, the operator CLI: a typed client of the controller's REST API, the `demo` that
//! runs the whole loop on one machine, and `sim`, simulated devices for load tests.
//!
//! It shares the API's request and response types with the server through
//! [`edgefleet_shared::api`] and compiles neither the server (SQLite, the broker) nor an
//! inference engine.
//!
//! Exit codes: 0 success, 1 the controller (or MLflow) refused (its `{"error"}` is printed), 2
//! bad arguments, 69 the controller (or MLflow) cannot be reached.
//!
//! # Layout
//! - [`args`]: the command line (clap).
//! - [`commands`]: each command as typed API calls.
//! - [`client`]: the typed HTTP client, one method per route; [`push`] reads a push's files.
//! - `output`: tables and JSON on stdout.
//! - [`import`]: `model import`, through [`mlflow`], a client of MLflow's REST API.
//! - [`demo`], [`sim`]: the demo and the device simulator.
//! - [`trainer`]: the bundled retraining step (logistic regression → ONNX, via `onnx`).

/// `println!` for the CLI's stdout: when the reader has gone (`edgefleet ... | head`) the
/// process ends quietly with status 0 instead of panicking on the closed pipe.
macro_rules! say {
    () => { $crate::stdout_text("\n") };
    ($($t:tt)*) => { $crate::stdout_text(&(format!($($t)*) + "\n")) };
}

/// Writes `text` to stdout; a closed pipe ends the process (status 0), any other write error
/// too (status 74, EX_IOERR) after saying so on stderr.
pub(crate) fn stdout_text(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("edgefleet: cannot write to stdout: {e}");
        std::process::exit(74);
    }
}

pub mod args;
pub mod client;
pub mod commands;
pub mod demo;
pub mod import;
pub mod mlflow;
mod onnx;
mod output;
pub mod push;
pub mod sim;
pub mod trainer;

pub use args::Cli;
pub use client::{CliError, Client};
pub use commands::run;
