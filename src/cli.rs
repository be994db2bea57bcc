//! The command line: `waotp serve` (the default) and, as they arrive, the flow author's tools.
//!
//! Exit codes: 0 ok, 1 runtime error, 2 bad usage or invalid configuration.

use crate::app::Application;
use crate::config::Settings;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "waotp",
    version,
    about = "WhatsApp one-time-password verification bot"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook and merchant API server (configured by WAOTP_* variables).
    Serve,
}

/// Parses the arguments and runs the chosen command.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
    }
}

fn serve() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("waotp: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&settings.log, settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("waotp")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waotp: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "waotp stopped with an error");
            eprintln!("waotp: {e:#}");
            ExitCode::from(1)
        }
    }
}
