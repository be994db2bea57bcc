//! Durability across a real crash: the server process is killed with SIGKILL right after it
//! answered 200, and the acknowledged events are still there when the database is reopened —
//! and are handled by the next run.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use waotp::store::Store;

/// Starts `waotp serve` on port 0 with the test settings.
fn start_server(dir: &std::path::Path) -> (Child, String) {
    common::spawn_serve(common::test_vars(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, address) = start_server(dir.path());
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let id = format!("wamid.crash-{i}");
        let body = common::text_message(&id, &format!("1555000{:04}", i % 3), "before the crash");
        let res = client
            .post(format!("http://{address}/webhook"))
            .header("x-hub-signature-256", common::sign(body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
        acknowledged.push(id);
    }
    // SIGKILL: no shutdown hook, no final flush.
    child.kill().expect("kill");
    child.wait().expect("reaped");

    {
        let store = Store::open(&dir.path().join("data"), |_| {}).expect("reopen after crash");
        for id in &acknowledged {
            assert!(
                store
                    .inbound()
                    .seen(&format!("m\u{0}{id}"))
                    .expect("lookup"),
                "{id} was acknowledged but lost"
            );
        }
        assert_eq!(store.inbound().len(), acknowledged.len());
    }

    // The next run handles whatever the killed one had not, and redeliveries stay deduplicated.
    let (mut child, address) = start_server(dir.path());
    let body = common::text_message(&acknowledged[0], "15550000000", "before the crash");
    let res = client
        .post(format!("http://{address}/webhook"))
        .header("x-hub-signature-256", common::sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = common::metrics(&client, &format!("http://{address}")).await;
        if metrics.contains("waotp_inbound_pending 0") {
            assert!(
                metrics.contains("waotp_events_deduplicated_total 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replayed events not handled: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A graceful stop (SIGTERM) exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = child.wait().expect("exit");
    assert!(exit.success(), "graceful shutdown exited with {exit}");
}
