use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A .env file in the working directory, when present, fills in unset variables.
    let _ = dotenvy::dotenv();
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
