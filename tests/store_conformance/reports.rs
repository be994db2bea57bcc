//! Funnel stats and template statuses.

use super::support::{at, now, scope};
use super::Backend;
use waotp::store::{hour_of, Metric, TemplateStatus};
use waotp::tenants::Scope;

pub async fn stats_counts_add_up(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let other = Scope::new("acme", "1000000002");
    // Concurrent counts all land.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let stats = s.stats.clone();
        tasks.push(tokio::spawn(async move {
            stats
                .count(&scope(), "signup", Metric::Started, t0, 1)
                .await
                .expect("count")
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    s.stats
        .count(&other, "signup", Metric::Started, t0, 2)
        .await
        .expect("count");
    s.stats
        .count(&scope(), "signup", Metric::Outcome("verified"), t0, 1)
        .await
        .expect("count");
    s.stats
        .count(&scope(), "login", Metric::CodeSent, at(t0, 7200), 5)
        .await
        .expect("count");
    s.stats.code_sent_at("ses_s", t0).await.expect("sent at");
    s.engine.durable().await.expect("durable");

    let hour = hour_of(t0);
    let s = b.reopen(s).await;
    let signup = s
        .stats
        .query(Some("signup"), hour, hour + 1)
        .await
        .expect("query");
    assert_eq!(signup.started, 10);
    assert_eq!(signup.outcomes.get("verified"), Some(&1));
    let all = s.stats.query(None, hour, hour + 3).await.expect("query");
    assert_eq!((all.started, all.code_sent), (10, 5));
    let merchant = s
        .stats
        .query_merchant("acme", &scope(), Some("signup"), hour, hour + 1)
        .await
        .expect("query");
    assert_eq!(merchant.all.started, 10);
    assert_eq!(
        merchant.numbers.get("1000000002").map(|t| t.started),
        Some(2)
    );
    assert_eq!(
        s.stats
            .query_merchant("someone-else", &scope(), None, hour, hour + 3)
            .await
            .expect("query")
            .all
            .started,
        0
    );
    assert_eq!(s.stats.sent_at("ses_s").await.expect("sent at"), Some(t0));
    s.stats.session_done("ses_s").await.expect("done");
    assert_eq!(s.stats.sent_at("ses_s").await.expect("sent at"), None);
}

fn status(waba: Option<&str>, name: &str, status: &str, secs: i64) -> TemplateStatus {
    TemplateStatus {
        waba: waba.map(str::to_owned),
        name: name.into(),
        language: "en".into(),
        template_id: String::new(),
        status: status.into(),
        reason: None,
        quality: None,
        updated_at: at(now(), secs),
    }
}

pub async fn template_statuses_are_kept_per_account(b: &dyn Backend) {
    let s = b.open().await;
    let t = &s.templates;
    assert_eq!(
        t.put(status(Some("waba1"), "otp", "APPROVED", 0))
            .await
            .expect("put"),
        None
    );
    t.put(status(Some("waba2"), "otp", "PAUSED", 1))
        .await
        .expect("put");
    t.put(status(None, "welcome", "APPROVED", 2))
        .await
        .expect("put");
    let replaced = t
        .put(status(Some("waba1"), "otp", "DISABLED", 3))
        .await
        .expect("put")
        .expect("the record it replaced");
    assert_eq!(replaced.status, "APPROVED");

    let s = b.reopen(s).await;
    let t = &s.templates;
    let get = |waba: Option<&'static str>, name: &'static str| {
        let t = t.clone();
        async move { t.get(waba, name, "en").await.map(|s| s.status) }
    };
    assert_eq!(get(Some("waba1"), "otp").await.as_deref(), Some("DISABLED"));
    assert_eq!(get(Some("waba2"), "otp").await.as_deref(), Some("PAUSED"));
    // A record without an account stands for any account.
    assert_eq!(
        get(Some("waba1"), "welcome").await.as_deref(),
        Some("APPROVED")
    );
    assert_eq!(
        t.get_exact(Some("waba1"), "welcome", "en").await,
        None,
        "no record of that account's own"
    );
    assert_eq!(t.all().await.len(), 3);
    assert_eq!(t.of_account(Some("waba2")).await.len(), 2);

    assert_eq!(t.adopt_unowned("waba1").await.expect("adopt"), 1);
    assert!(t.get_exact(Some("waba1"), "welcome", "en").await.is_some());
    assert!(t.get_exact(None, "welcome", "en").await.is_none());
}
