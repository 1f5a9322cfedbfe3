//! `buildlogs`: parses the command line, sets up tracing, runs (`serve`) or prints the spec.
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use buildlogs::{
    config::{Cli, Command},
    telemetry,
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            print!("{}", buildlogs::api::spec_json());
            ExitCode::SUCCESS
        }
        Command::Serve(config) => {
            telemetry::init_tracing();
            match buildlogs::app::run(*config, buildlogs::app::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
