//! The `sluice` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: the request path allocates many small short-lived buffers
/// (headers, JSON, rows), which glibc served with ~12% of the gateway's CPU in bench/run's
/// profile (see BENCHMARKS.md).
#[cfg(not(feature = "count-allocs"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bench builds only (`--features count-allocs`, bench/counts.py): the same mimalloc, counting
/// allocations and bytes asked for into [`sluice::metrics::alloc_counts`], which `/metrics` shows.
#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[cfg(feature = "count-allocs")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::Ordering::Relaxed;

    use sluice::metrics::alloc_counts::{ALLOCATIONS, BYTES};

    pub struct Counting;

    fn count(bytes: usize) {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(bytes as u64, Relaxed);
    }

    // SAFETY: every call is passed on unchanged to mimalloc, itself a `GlobalAlloc`.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }

        /// A reallocation counts as one allocation of its new size.
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size);
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

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
