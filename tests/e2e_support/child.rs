//! `waotp serve` as a child process, to kill with SIGKILL or signal with SIGHUP.

use super::{wait_for, Api, DEADLINE};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `waotp serve` as a child process, its stderr captured line by line.
pub struct ChildServer {
    pub child: std::process::Child,
    pub api: Api,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts the binary with `vars` (JSON logs at `log_level`) and waits for its address.
    pub fn start(vars: &HashMap<String, String>, log_level: &str) -> ChildServer {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_waotp"))
            .arg("serve")
            .env_clear()
            .envs(vars)
            .env("WAOTP_LOG", log_level)
            .env("WAOTP_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start waotp");
        let stderr = child.stderr.take().expect("stderr piped");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let message = v["message"].as_str().or(v["fields"]["message"].as_str());
                    if message == Some("listening") {
                        let address = v["address"]
                            .as_str()
                            .or(v["fields"]["address"].as_str())
                            .unwrap_or_default();
                        let _ = tx.send(address.to_owned());
                    }
                }
                lines.lock().expect("log").push(line);
            }
        });
        let Ok(address) = rx.recv_timeout(DEADLINE) else {
            // Not left running after the test: it would outlive it.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not log its address: {}",
                log.lock().expect("log").join("\n")
            );
        };
        ChildServer {
            child,
            api: Api::new(format!("http://{address}")),
            log,
        }
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Waits (polling, up to [`DEADLINE`]) for the process to exit on its own; its status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub async fn wait_log(&self, needles: &[&str]) -> String {
        wait_for(&format!("a log line with {needles:?}"), || {
            self.log
                .lock()
                .expect("log")
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
        })
        .await
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `waotp serve` with exactly `vars` and waits (polling, up to [`DEADLINE`]) for it to
/// stop on its own; returns its exit code and stderr. A server that starts instead of stopping
/// is killed, and `None` is returned.
pub fn serve_until_exit(vars: &HashMap<String, String>) -> Option<(i32, String)> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_waotp"))
        .arg("serve")
        .env_clear()
        .envs(vars)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start waotp");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let text = reader.join().expect("stderr reader");
    status.map(|s| (s.code().unwrap_or(-1), text))
}
