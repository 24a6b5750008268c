use std::process::ExitCode;

use clap::Parser;

/// The proxied call allocates a few dozen small blocks (session decode, headers, the upstream
/// request); mimalloc's thread-local free lists serve them cheaper than glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A .env file in the working directory, when present, fills in unset variables.
    let _ = dotenvy::dotenv();
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
