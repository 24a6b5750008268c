//! The command line: `gatehouse [--config FILE] [serve | check-config]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Settings};
use crate::startup::Application;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Backend-for-Frontend session server"
)]
pub struct Cli {
    /// TOML config file; environment variables GATEHOUSE_… override it.
    #[arg(long, short, env = "GATEHOUSE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration, print every problem, exit non-zero if there is one.
    CheckConfig,
}

fn load(cli: &Cli) -> Result<Settings, config::ConfigErrors> {
    config::load_from_path(cli.config.as_deref(), std::env::vars())
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::CheckConfig => match load(&cli) {
            Ok(settings) => {
                println!(
                    "configuration is valid: {} provider(s), {} session store",
                    settings.providers.len(),
                    match settings.store {
                        config::StoreSettings::Memory => "in-memory",
                        config::StoreSettings::Redis(_) => "redis",
                    }
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Serve => {
            let settings = match load(&cli) {
                Ok(settings) => settings,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init(&settings.log);
            serve(settings)
        }
    }
}

fn serve(settings: Settings) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        let bind = settings.server.bind;
        let public_url = settings.server.public_url.clone();
        let app = Application::build(settings)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%bind, port = app.port(), %public_url, "gatehouse listening");
        app.run_until_stopped().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gatehouse stopped");
            eprintln!("gatehouse: {error}");
            ExitCode::FAILURE
        }
    }
}
