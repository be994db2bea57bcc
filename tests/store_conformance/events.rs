//! Inbound events: recorded once, pending in order until handled, purged once handled.

use super::support::{customer_key, message};
use super::Backend;
use waotp::store::Recorded;

const ANA: &str = "15550001111";
const BEN: &str = "15550002222";

fn seq(r: Recorded) -> u64 {
    match r {
        Recorded::New { seq } => seq,
        Recorded::Duplicate => panic!("recorded as a duplicate"),
    }
}

pub async fn an_event_is_recorded_once(b: &dyn Backend) {
    let s = b.open().await;
    let event = message("wamid.once", ANA);
    assert!(!s.inbound.seen(&event.dedupe_key()).await.expect("seen"));
    let first = s
        .inbound
        .record(&event, &customer_key(ANA), 100)
        .await
        .expect("record");
    assert!(matches!(first, Recorded::New { .. }));
    s.inbound.durable().await.expect("durable");
    let again = s
        .inbound
        .record(&event, &customer_key(ANA), 101)
        .await
        .expect("record");
    assert_eq!(again, Recorded::Duplicate);
    assert!(s.inbound.seen(&event.dedupe_key()).await.expect("seen"));
    let counts = s.inbound.counts().await.expect("counts");
    assert_eq!((counts.recorded, counts.pending), (1, 1));
    assert!(s.inbound.next_seq().await.expect("next") > seq(first));

    // A redelivery after a restart is still a duplicate.
    let s = b.reopen(s).await;
    let after = s
        .inbound
        .record(&event, &customer_key(ANA), 102)
        .await
        .expect("record");
    assert_eq!(after, Recorded::Duplicate);
}

pub async fn pending_events_come_in_order_until_handled(b: &dyn Backend) {
    let s = b.open().await;
    let mut seqs = Vec::new();
    for (id, who) in [("wamid.p1", ANA), ("wamid.p2", BEN), ("wamid.p3", ANA)] {
        let r = s
            .inbound
            .record(&message(id, who), &customer_key(who), 100)
            .await
            .expect("record");
        seqs.push(seq(r));
    }
    s.inbound.durable().await.expect("durable");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "arrival order: {seqs:?}"
    );

    let pending: Vec<u64> = s
        .inbound
        .pending()
        .await
        .expect("pending")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(pending, seqs);
    let of_ana: Vec<(u64, String)> = s
        .inbound
        .pending_of(&customer_key(ANA))
        .await
        .expect("pending of")
        .into_iter()
        .map(|(seq, e)| (seq, e.event.dedupe_key()))
        .collect();
    assert_eq!(
        of_ana,
        [
            (seqs[0], message("wamid.p1", ANA).dedupe_key()),
            (seqs[2], message("wamid.p3", ANA).dedupe_key())
        ]
    );

    assert!(!s.inbound.is_handled(seqs[0]).await.expect("handled?"));
    s.inbound.mark_handled(seqs[0]).await.expect("mark");
    s.inbound
        .mark_handled(seqs[0])
        .await
        .expect("marking twice is harmless");
    assert!(s.inbound.is_handled(seqs[0]).await.expect("handled?"));
    let left: Vec<u64> = s
        .inbound
        .pending()
        .await
        .expect("pending")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(left, [seqs[1], seqs[2]]);
    assert_eq!(
        s.inbound
            .pending_of(&customer_key(ANA))
            .await
            .expect("pending of")
            .len(),
        1
    );
    assert_eq!(s.inbound.counts().await.expect("counts").pending, 2);
}

pub async fn handled_events_are_purged_and_pending_ones_kept(b: &dyn Backend) {
    let s = b.open().await;
    let old = seq(s
        .inbound
        .record(&message("wamid.old", ANA), &customer_key(ANA), 1_000)
        .await
        .expect("record"));
    let waiting = seq(s
        .inbound
        .record(&message("wamid.waiting", BEN), &customer_key(BEN), 1_000)
        .await
        .expect("record"));
    s.inbound.durable().await.expect("durable");
    s.inbound.mark_handled(old).await.expect("mark");
    s.engine.durable().await.expect("durable");
    let purged = s.inbound.purge_before(2_000).await.expect("purge");
    assert!(purged >= 1, "the handled event's record goes");
    let pending: Vec<u64> = s
        .inbound
        .pending()
        .await
        .expect("pending")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(pending, [waiting], "a pending event is never purged");
    assert!(!s
        .inbound
        .seen(&message("wamid.old", ANA).dedupe_key())
        .await
        .expect("seen"));
}

pub async fn pending_events_survive_reopening(b: &dyn Backend) {
    let s = b.open().await;
    let handled = seq(s
        .inbound
        .record(&message("wamid.r1", ANA), &customer_key(ANA), 100)
        .await
        .expect("record"));
    let waiting = seq(s
        .inbound
        .record(&message("wamid.r2", ANA), &customer_key(ANA), 100)
        .await
        .expect("record"));
    s.inbound.durable().await.expect("durable");
    s.inbound.mark_handled(handled).await.expect("mark");
    let s = b.reopen(s).await;
    let pending = s.inbound.pending().await.expect("pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, waiting);
    assert_eq!(pending[0].1.event, message("wamid.r2", ANA));
    assert!(s.inbound.next_seq().await.expect("next") > waiting);
}
