//! The `waotp` binary: everything lives in the library; see `waotp --help`.

/// jemalloc rather than glibc's allocator: glibc's arenas cost the webhook about a fifth of its
/// CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Freed memory goes back to the system from jemalloc's own threads, on its decay timer,
    // also while the server is idle (otherwise only a thread that allocates again returns it).
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    waotp::cli::run()
}
