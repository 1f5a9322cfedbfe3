use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use buildlogs::{
    App,
    app::Listeners,
    config::{Cli, Command, Config},
    dev, telemetry,
};
use clap::Parser;
use tokio::net::TcpListener;

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
            match serve(*config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    let kit = if config.dev {
        Some(dev::DevKit::prepare(&mut config)?)
    } else {
        None
    };
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let addr = listener.local_addr().unwrap_or(config.listen_addr);
    let metrics = match config.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?,
        ),
        None => None,
    };
    let app = App::build(config).await?;
    if let Some(kit) = kit {
        kit.start(app.state(), addr).await?;
    }
    let listeners = Listeners {
        api: listener,
        metrics,
    };
    app.serve(listeners, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
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
