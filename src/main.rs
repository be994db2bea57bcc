//! The `waotp` binary: command-line entry point.
fn main() {}
