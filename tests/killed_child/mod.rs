//! A test that half runs in a child process killed with SIGKILL: the child (this same test
//! binary, running the same test with an environment variable naming a data directory) writes,
//! waits for its writes to be durable, prints `acknowledged` and waits; the parent kills it
//! (no shutdown hook, no flush) and then checks what a restart finds.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// The parent's half: runs `test` of this binary as a child with `env` = `data`, waits for its
/// acknowledgement, and kills it with SIGKILL.
pub fn run_until_acknowledged_then_kill(test: &str, env: &str, data: &Path) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let acknowledged = lines.any(|l| l.is_ok_and(|l| l.trim_end().ends_with("acknowledged")));
    child.kill().expect("kill");
    child.wait().expect("reaped");
    assert!(
        acknowledged,
        "the child never acknowledged its writes (its assertions failed?)"
    );
}

/// The child's half, once its writes are durable: says so and waits to be killed.
pub fn acknowledge_and_wait() -> ! {
    let mut out = std::io::stdout();
    writeln!(out, "acknowledged").expect("stdout");
    out.flush().expect("stdout");
    loop {
        std::thread::park();
    }
}
