use std::process::ExitCode;

use clap::Parser;

/// The proxied call allocates a few dozen small blocks (session decode, headers, the upstream
/// request); mimalloc's thread-local free lists serve them cheaper than glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// On Linux mimalloc commits its first arena (1 GiB of address space) eagerly, and memory that
/// start-up allocated and freed then stays resident: about 16 MB of an idle process. Committed
/// on demand, freed pages go back to the system. The option is read when that arena is made, at
/// the first allocation, which Rust makes before `main`: so it is set from a constructor that
/// runs before any (priority 99, with std's own). A value set in the environment wins.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[unsafe(link_section = ".init_array.00099")]
static MIMALLOC_COMMIT_ON_DEMAND: extern "C" fn() = {
    extern "C" fn commit_on_demand() {
        // SAFETY: runs before main, single-threaded, with two NUL-terminated literals; setenv
        // with overwrite 0 leaves a value the operator set.
        unsafe { libc::setenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr(), c"0".as_ptr(), 0) };
    }
    commit_on_demand
};

fn main() -> ExitCode {
    // A .env file in the working directory, when present, fills in unset variables.
    let _ = dotenvy::dotenv();
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
