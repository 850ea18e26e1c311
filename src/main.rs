//! The `sluice` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: the request path allocates many small short-lived buffers
/// (headers, JSON, rows), which glibc served with ~12% of the gateway's CPU in bench/run's
/// profile (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = sluice::cli::Cli::parse();
    // Big (lazily committed) thread stacks let the SQL policy check deep statements in place
    // instead of allocating a fresh stack per request.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(sluice::policy::RUNTIME_THREAD_STACK_BYTES)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sluice::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
