//! Stats, template statuses and the audit log on a real PostgreSQL server, read back the way
//! the embedded engine's are, and shared by two instances (two pools). Skipped, with a notice,
//! without `WAOTP_TEST_DATABASE_URL`.

mod pg_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Runtime};
use tokio_postgres::NoTls;

use waotp::otp::CustomerNumber;
use waotp::store::postgres::audit::PgAuditLog;
use waotp::store::postgres::stats::PgStatsStore;
use waotp::store::postgres::templates::{PgTemplateStatuses, FRESH_FOR};
use waotp::store::{AuditEntry, AuditKind};
use waotp::store::{MerchantTotals, Metric, TemplateStatus, Totals};
use waotp::tenants::Scope;

const MIGRATION: &str = include_str!("../src/store/postgres/migrations/0002_otp.sql");

fn pool(url: &str) -> Pool {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("pool")
}

async fn setup(test: &str) -> Option<(pg_support::TestDatabase, Pool)> {
    let db = pg_support::fresh_database(test).await?;
    let pool = pool(&db.url);
    pool.get()
        .await
        .expect("connect")
        .batch_execute(MIGRATION)
        .await
        .expect("migration applies");
    Some((db, pool))
}

fn at(hour: i64, minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(hour * 3600 + minute * 60, 0).expect("valid time")
}

#[tokio::test]
async fn counts_sum_per_flow_merchant_number_and_hour_range() {
    let Some((_db, pool)) = setup("stats_sums").await else {
        return;
    };
    let s = PgStatsStore::new(pool);
    let sc = Scope::new("default", "sandbox");
    for (flow, metric, when, n) in [
        ("a", Metric::Started, at(100, 5), 1),
        ("a", Metric::Started, at(100, 59), 2),
        ("a", Metric::Started, at(101, 0), 4),
        ("b", Metric::Started, at(100, 1), 8),
        ("a", Metric::Outcome("verified"), at(100, 7), 1),
        ("b", Metric::Failure(Some(131026)), at(100, 7), 3),
        ("b", Metric::Failure(None), at(100, 7), 1),
        ("sign", Metric::Started, at(100, 7), 16),
        ("a", Metric::VerifyLatency(2), at(100, 8), 5),
    ] {
        s.count(&sc, flow, metric, when, n).await.expect("count");
    }
    let a = s.query(Some("a"), 100, 101).await.expect("query");
    assert_eq!(a.started, 3);
    assert_eq!(a.started_by_hour, BTreeMap::from([(100, 3)]));
    assert_eq!(a.outcomes, BTreeMap::from([("verified".to_owned(), 1)]));
    assert_eq!(a.verify_latency.counts[2], 5);
    assert!(a.failures.is_empty());
    let all = s.query(None, 100, 102).await.expect("query");
    assert_eq!(all.started, 31);
    assert_eq!(all.started_by_hour, BTreeMap::from([(100, 27), (101, 4)]));
    assert_eq!(all.failures, BTreeMap::from([(None, 1), (Some(131026), 3)]));
    assert_eq!(
        s.query(Some("signup"), 100, 101)
            .await
            .expect("query")
            .started,
        0
    );
    assert_eq!(
        s.query(None, 102, 200).await.expect("query"),
        Totals::default()
    );
    assert_eq!(
        s.query(None, 101, 101).await.expect("query"),
        Totals::default()
    );

    let a1 = Scope::new("m", "1");
    let a2 = Scope::new("m", "2");
    s.count(&a1, "f", Metric::Started, at(7, 0), 1)
        .await
        .expect("count");
    s.count(&a2, "f", Metric::Started, at(7, 0), 2)
        .await
        .expect("count");
    s.count(&a2, "g", Metric::Verified, at(7, 0), 4)
        .await
        .expect("count");
    let m = s.query_merchant("m", &sc, None, 7, 8).await.expect("query");
    assert_eq!((m.all.started, m.all.verified), (3, 4));
    assert_eq!((m.numbers["2"].started, m.numbers["2"].verified), (2, 4));
    assert_eq!(m.numbers["1"].started, 1);
    let m_f = s
        .query_merchant("m", &sc, Some("f"), 7, 8)
        .await
        .expect("query");
    assert_eq!((m_f.all.started, m_f.all.verified), (3, 0));
    assert_eq!(
        s.query_merchant("other", &sc, None, 7, 8)
            .await
            .expect("query"),
        MerchantTotals::default()
    );
}

#[tokio::test]
async fn huge_counts_saturate_and_code_times_are_kept_until_the_session_is_done() {
    let Some((_db, pool)) = setup("stats_saturate").await else {
        return;
    };
    let s = PgStatsStore::new(pool);
    let sc = Scope::new("default", "sandbox");
    s.count(&sc, "a", Metric::CodeSent, at(1, 0), u64::MAX - 1)
        .await
        .expect("count");
    s.count(&sc, "a", Metric::CodeSent, at(1, 0), 5)
        .await
        .expect("count");
    s.count(&sc, "b", Metric::CodeSent, at(1, 0), i64::MAX as u64)
        .await
        .expect("count");
    let sent = s.query(None, 0, 10).await.expect("query").code_sent;
    assert_eq!(sent, i64::MAX as u64, "saturated, never wrapped");

    assert_eq!(s.sent_at("ses_1").await.expect("read"), None);
    s.code_sent_at("ses_1", at(3, 4)).await.expect("write");
    s.code_sent_at("ses_1", at(3, 5))
        .await
        .expect("the latest wins");
    assert_eq!(s.sent_at("ses_1").await.expect("read"), Some(at(3, 5)));
    s.session_done("ses_1").await.expect("remove");
    assert_eq!(s.sent_at("ses_1").await.expect("read"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_counts_from_two_instances_all_land() {
    let Some((db, pool_a)) = setup("stats_concurrent").await else {
        return;
    };
    let a = Arc::new(PgStatsStore::new(pool_a));
    let b = Arc::new(PgStatsStore::new(pool(&db.url)));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let sc = Scope::new("m", "n");
                s.count(&sc, "f", Metric::Started, at(9, 1), 1)
                    .await
                    .expect("count");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(a.query(None, 9, 10).await.expect("query").started, 200);
}

fn status(waba: Option<&str>, name: &str, state: &str, at: i64) -> TemplateStatus {
    TemplateStatus {
        waba: waba.map(str::to_owned),
        name: name.into(),
        language: "en".into(),
        template_id: String::new(),
        status: state.into(),
        reason: None,
        quality: None,
        updated_at: DateTime::from_timestamp(at, 0).expect("time"),
    }
}

#[tokio::test]
async fn statuses_are_kept_per_account_and_unowned_ones_go_to_the_default_account() {
    let Some((db, pool_a)) = setup("templates").await else {
        return;
    };
    {
        let store = PgTemplateStatuses::new(pool_a);
        store
            .put(status(None, "otp", "PAUSED", 1))
            .await
            .expect("put");
        store
            .put(status(None, "promo", "APPROVED", 1))
            .await
            .expect("put");
        store
            .put(status(Some("A"), "promo", "DISABLED", 2))
            .await
            .expect("put");
        let replaced = store
            .put(status(Some("B"), "otp", "PENDING", 2))
            .await
            .expect("put");
        assert_eq!(replaced, None);
        let replaced = store
            .put(status(Some("B"), "otp", "APPROVED", 3))
            .await
            .expect("put");
        assert_eq!(replaced.map(|s| s.status), Some("PENDING".to_owned()));
        let get = |waba: Option<&'static str>| {
            let store = &store;
            async move { store.get(waba, "otp", "en").await.expect("a status").status }
        };
        assert_eq!(
            get(Some("A")).await,
            "PAUSED",
            "any account's record applies"
        );
        assert_eq!(get(Some("B")).await, "APPROVED");
        assert_eq!(get(None).await, "APPROVED", "the most recent");
        assert_eq!(store.adopt_unowned("A").await.expect("adopt"), 1);
    }
    // Another instance reads what the first wrote.
    let store = PgTemplateStatuses::new(pool(&db.url));
    let a = store
        .get_exact(Some("A"), "otp", "en")
        .await
        .expect("adopted");
    assert_eq!(
        (a.waba.as_deref(), a.status.as_str()),
        (Some("A"), "PAUSED")
    );
    assert_eq!(
        store.get(Some("A"), "promo", "en").await.expect("a").status,
        "DISABLED"
    );
    assert!(store.get_exact(None, "promo", "en").await.is_none());
    assert!(store.get(Some("C"), "otp", "en").await.is_none());
    let of_b: Vec<_> = store
        .of_account(Some("B"))
        .await
        .into_iter()
        .map(|s| (s.name, s.status))
        .collect();
    assert_eq!(of_b, [("otp".to_owned(), "APPROVED".to_owned())]);
    assert_eq!(store.all().await.len(), 3);
}

#[tokio::test]
async fn a_pause_received_by_one_instance_reaches_the_other() {
    let Some((db, pool_a)) = setup("templates_shared").await else {
        return;
    };
    let a = PgTemplateStatuses::new(pool_a);
    let b = PgTemplateStatuses::new(pool(&db.url));
    a.put(status(Some("W"), "otp", "APPROVED", 1))
        .await
        .expect("put");
    assert_eq!(
        b.get(Some("W"), "otp", "en").await.expect("read").status,
        "APPROVED"
    );
    a.put(status(Some("W"), "otp", "PAUSED", 2))
        .await
        .expect("put");
    assert_eq!(
        a.get(Some("W"), "otp", "en").await.expect("read").status,
        "PAUSED",
        "the writer sees its write at once"
    );
    let deadline = Instant::now() + FRESH_FOR + Duration::from_secs(10);
    loop {
        let seen = b.get(Some("W"), "otp", "en").await.expect("read");
        if seen.blocked_reason() == Some("template_paused") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other instance never saw the pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn audit_entries_keep_append_order_and_page_from_an_id() {
    let Some((_db, pool)) = setup("audit").await else {
        return;
    };
    let log = PgAuditLog::new(pool);
    let customer = CustomerNumber::parse("+919876543210").expect("valid");
    let mut ids = Vec::new();
    for i in 0..300 {
        let entry = AuditEntry::new(
            Utc::now(),
            AuditKind::Check,
            &format!("s{}", i % 3),
            &i.to_string(),
        )
        .with_flow("signup_verification")
        .with_customer(&customer);
        ids.push(log.append(&entry).await.expect("append"));
    }
    let read = log.read_from(0, usize::MAX).await.expect("read");
    let outcomes: Vec<String> = read.iter().map(|(_, e)| e.outcome().to_owned()).collect();
    let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(outcomes, expected);
    assert_eq!(read.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(read[0].1.customer(), Some("…3210"));
    assert_eq!(log.for_session("s1").await.expect("scan").len(), 100);
    let page = log.read_from(ids[150], 2).await.expect("page");
    assert_eq!(
        page.iter().map(|(_, e)| e.outcome()).collect::<Vec<_>>(),
        ["150", "151"]
    );
}
