//! `edgefleet`: the operator CLI. Parses arguments and runs the library's client.

use std::process::ExitCode;

use clap::Parser as _;
use edgefleet_cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    edgefleet_service::observability::init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgefleet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
