//! The `waotp` binary: everything lives in the library; see `waotp --help`.

/// mimalloc instead of the system allocator: under load, glibc's malloc and free took a fifth
/// of the server's CPU (BENCHMARKS.md, fifth round).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    waotp::cli::run()
}
