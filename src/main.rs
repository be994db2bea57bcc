//! The `waotp` binary: everything lives in the library; see `waotp --help`.

fn main() -> std::process::ExitCode {
    waotp::cli::run()
}
