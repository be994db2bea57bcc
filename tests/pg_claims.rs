//! Outbox claims seen from a real server on PostgreSQL: a sender whose entries wait in its queue
//! behind a slow Graph API keeps them by renewing their claims, and an entry whose claim passed
//! to another instance meanwhile is left to that instance, never sent by both.
//!
//! The server runs in this process on a fresh database, with the fake Graph API answering
//! slowly. The test queues one customer's entries as another instance's step would, and, while
//! the server is busy sending the first, does what another instance's claim does to the second
//! (writes itself as its holder): the server must drop that entry unsent and count it, send the
//! others once each, in order, renewing the claims of those still waiting; once the other
//! "instance" gives the entry back, the server sends it, once.
//!
//! Needs a server named by `WAOTP_TEST_DATABASE_URL` (without it, it prints a notice and
//! passes).

mod e2e_support;
mod pg_support;

use chrono::{DateTime, Utc};
use e2e_support::*;
use std::time::{Duration, Instant};
use waotp::store::postgres::PgEngine;
use waotp::store::{OutboxEntry, OutboxPayload, StepWrite};
use waotp::{Application, Settings};

const CUSTOMER: &str = "919800007001";
/// How long the fake Graph API takes to answer each send: the entries after the first wait in
/// the server's queue for several of these, longer than a claim renewal period (10 s) for the
/// last of them, well under the Graph client's answer timeout.
const SLOW: Duration = Duration::from_secs(4);
/// The longest any one wait of the test may take.
const WAIT: Duration = Duration::from_secs(90);
/// The holder another instance's claim writes.
const OTHER: &str = "another-instance";

async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored state, holder and lease of an entry.
async fn claim_of(
    db: &tokio_postgres::Client,
    id: &str,
) -> (String, Option<String>, Option<DateTime<Utc>>) {
    let row = db
        .query_one(
            "SELECT state, claimed_by, claimed_until FROM waotp_outbox WHERE id = $1",
            &[&id],
        )
        .await
        .expect("entry row");
    (row.get(0), row.get(1), row.get(2))
}

/// The outbox ids of the messages the fake Graph API received for [`CUSTOMER`], in order.
fn sent(graph: &Graph) -> Vec<String> {
    graph
        .sends_to(CUSTOMER)
        .iter()
        .map(|b| {
            b["biz_opaque_callback_data"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

async fn claims_lost(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("waotp_outbox_claims_lost_total "))
        .and_then(|n| n.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_keeps_its_waiting_entries_and_never_sends_one_another_instance_took() {
    let Some(db) = pg_support::fresh_database("claims_e2e").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    let mut vars = server_vars(
        &dir.path().join("data"),
        &bundled_flows(),
        &graph,
        &merchant,
    );
    vars.insert("WAOTP_DATABASE_URL".into(), db.url.clone());
    let app = Application::build(Settings::from_vars(vars).expect("settings"))
        .await
        .expect("server builds");
    let base = format!("http://{}", app.address());
    tokio::spawn(app.run_until_stopped());
    let db_sql = pg_support::connect(&db.url).await;
    let http = reqwest::Client::new();

    // Six entries for one customer, queued by one step (of another instance, say): the server
    // claims them together and sends them one after another.
    graph.set_delay(SLOW);
    let key = waotp::otp::OtpKey::generate(&mut rand::rngs::OsRng);
    let queuer = PgEngine::connect(&db.url, &key).await.expect("engine");
    // All due already when the server first looks (in queue order), so that one delivery task
    // takes all six: due times still ahead of the first pass would leave the later entries
    // to a later pass.
    let t0 = Utc::now() - chrono::Duration::seconds(1);
    let ids: Vec<String> = (1..=6).map(|i| format!("claims:e{i}")).collect();
    let entries: Vec<OutboxEntry> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            OutboxEntry::pending(
                id.clone(),
                None,
                CUSTOMER.into(),
                OutboxPayload::Text {
                    text: format!("message {i}"),
                },
                t0 + chrono::Duration::milliseconds(i as i64),
            )
        })
        .collect();
    queuer
        .apply_step(StepWrite {
            outbox: entries,
            ..StepWrite::default()
        })
        .await
        .expect("queue");

    // The first is on its way (the fake answers it slowly); the others wait, claimed.
    poll("the first send reaches the Graph API", || async {
        (!sent(&graph).is_empty()).then_some(())
    })
    .await;
    assert_eq!(sent(&graph), [ids[0].clone()]);
    let (state, holder, first_lease) = claim_of(&db_sql, &ids[5]).await;
    assert_eq!(state, "pending");
    let holder = holder.expect("the last entry is claimed");
    let first_lease = first_lease.expect("with a lease");

    // Another instance takes the second entry (as its claim would once the server's lease on it
    // ran out).
    let taken = db_sql
        .execute(
            "UPDATE waotp_outbox SET claimed_by = $2,
                 claimed_until = now() + interval '10 minutes'
             WHERE id = $1 AND claimed_by = $3 AND claimed_until > now()",
            &[&ids[1], &OTHER, &holder],
        )
        .await
        .expect("take over");
    assert_eq!(taken, 1, "the server held the second entry's claim");

    // The last entry, still waiting, has its claim renewed by the server.
    poll(
        "the server renews the claim of an entry waiting in its queue",
        || async {
            let (state, by, until) = claim_of(&db_sql, &ids[5]).await;
            (state == "pending"
                && by.as_deref() == Some(holder.as_str())
                && until > Some(first_lease))
            .then_some(())
        },
    )
    .await;

    // The server goes on with the rest, drops the entry it no longer holds, and counts it.
    poll("the last entry is sent", || async {
        (claim_of(&db_sql, &ids[5]).await.0 == "done").then_some(())
    })
    .await;
    assert_eq!(
        sent(&graph),
        [0, 2, 3, 4, 5].map(|i| ids[i].clone()),
        "each entry the server held sent once, in order; the one taken over not at all"
    );
    assert_eq!(claims_lost(&http, &base).await, Some(1));
    let (state, by, _) = claim_of(&db_sql, &ids[1]).await;
    assert_eq!(
        (state.as_str(), by.as_deref()),
        ("pending", Some(OTHER)),
        "the entry taken over is left as its new holder has it"
    );

    // Its holder gives it back unsent: the server sends it, once.
    graph.set_delay(Duration::ZERO);
    db_sql
        .batch_execute(&format!(
            "UPDATE waotp_outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = '{}';
             NOTIFY waotp_work",
            ids[1]
        ))
        .await
        .expect("give back");
    poll("the entry given back is sent", || async {
        (claim_of(&db_sql, &ids[1]).await.0 == "done").then_some(())
    })
    .await;
    let mut all = sent(&graph);
    assert_eq!(all.len(), 6, "{all:?}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "no entry was sent twice");
}
