//! The webhook on the real server: signatures, sizes, parsing errors, deduplication, handshake.

mod common;

use common::{sign, spawn_app, text_message, TestApp, VERIFY_TOKEN};
use waotp::domain::{InboundEvent, MessageContent};

fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.store.inbound().len(), 0, "an event was stored");
    assert_eq!(app.store.inbound().pending_len(), 0);
}

#[tokio::test]
async fn escaped_unicode_verifies_on_the_raw_bytes_only() {
    let app = spawn_app().await;
    // Exactly as WhatsApp sends it: non-ASCII escaped as \uXXXX.
    let raw = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","contacts":[{"profile":{"name":"Jos\u00e9"},"wa_id":"34600111222"}],"messages":[{"from":"34600111222","id":"wamid.unicode","timestamp":"1700000000","type":"text","text":{"body":"Hola \u00bfqu\u00e9 tal? \ud83d\ude00"}}]}}]}]}"#;
    let signature = sign(raw.as_bytes());

    // The same JSON re-serialized (escapes turned into UTF-8) no longer matches the signature.
    let reserialized =
        serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(raw).expect("json"))
            .expect("serialize");
    assert_ne!(reserialized, raw.as_bytes());
    let res = app.post_webhook_with(reserialized, Some(&signature)).await;
    assert_eq!(res.status(), 401);
    assert_nothing_stored(&app);

    let res = app.post_webhook_with(raw, Some(&signature)).await;
    assert_eq!(res.status(), 200);
    let events = app.store.inbound().all().expect("log");
    assert_eq!(events.len(), 1);
    let InboundEvent::Message(m) = &events[0].1.event else {
        panic!("a message")
    };
    assert_eq!(
        m.content,
        MessageContent::Text {
            body: "Hola ¿qué tal? 😀".into()
        }
    );
    assert_eq!(m.profile_name.as_deref(), Some("José"));
}

#[tokio::test]
async fn bad_signatures_get_401_and_store_nothing() {
    let app = spawn_app().await;
    let body = text_message("wamid.sig", "15551230000", "hello");
    let good = sign(body.as_bytes());
    let hex = good.trim_start_matches("sha256=");
    let mut flipped = hex.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = format!("sha256={}", String::from_utf8(flipped).expect("ascii"));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("wrong prefix", Some(format!("sha1={hex}"))),
        ("no prefix", Some(hex.to_owned())),
        ("wrong hex", Some(flipped)),
        ("not hex", Some(format!("sha256={}", "g".repeat(64)))),
        ("truncated hex", Some(good[..good.len() - 1].to_owned())),
        ("empty", Some(String::new())),
        (
            "other key",
            Some(waotp::webhook::signature::SignatureVerifier::new(b"nope").sign(body.as_bytes())),
        ),
    ];
    for (name, header) in cases {
        let res = app.post_webhook_with(body.clone(), header.as_deref()).await;
        assert_eq!(res.status(), 401, "{name}");
        let json: serde_json::Value = res.json().await.expect("json error");
        assert_eq!(json["error"]["code"], "invalid_signature", "{name}");
    }
    assert_nothing_stored(&app);
    assert!(!app.store.inbound().seen("m\u{0}wamid.sig").expect("seen"));

    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("waotp_webhook_requests_total{result=\"unauthorized\"} 8"),
        "{metrics}"
    );
}

#[tokio::test]
async fn signed_garbage_is_400_and_stores_nothing() {
    let app = spawn_app().await;
    for body in [
        "not json at all",
        "{\"object\":\"page\",\"entry\":[]}",
        "{\"entry\":[]}",
        "[]",
        "{\"object\":\"whatsapp_business_account\",\"entry\":{}}",
    ] {
        let res = app.post_webhook(body).await;
        assert_eq!(res.status(), 400, "{body}");
        let json: serde_json::Value = res.json().await.expect("json error");
        assert_eq!(json["error"]["code"], "invalid_payload");
    }
    assert_nothing_stored(&app);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = spawn_app().await;
    let mut body = text_message("wamid.big", "15551230000", &"x".repeat(3 * 1024 * 1024));
    body.push(' ');
    let res = app.post_webhook(body).await;
    assert_eq!(res.status(), 413);
    assert_nothing_stored(&app);

    // Just under the limit is fine.
    let body = text_message(
        "wamid.almost",
        "15551230000",
        &"y".repeat(3 * 1024 * 1024 - 1024),
    );
    assert!(body.len() <= 3 * 1024 * 1024);
    let res = app.post_webhook(body).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_same_delivery_is_recorded_once() {
    let app = spawn_app().await;
    let body = text_message("wamid.repeat", "15551239999", "once");
    // Five at once…
    let signature = sign(body.as_bytes());
    let sends = (0..5).map(|_| {
        let req = app
            .client
            .post(format!("{}/webhook", app.base))
            .header("x-hub-signature-256", signature.clone())
            .body(body.clone());
        async move { req.send().await.expect("sent").status() }
    });
    for status in futures_join_all(sends).await {
        assert_eq!(status, 200);
    }
    // …and five one after another.
    for _ in 0..5 {
        assert_eq!(app.post_webhook(body.clone()).await.status(), 200);
    }
    assert_eq!(app.store.inbound().len(), 1);
    app.settle().await;
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("waotp_events_deduplicated_total 9"),
        "{metrics}"
    );
    assert!(
        metrics.contains("waotp_events_handled_total 1"),
        "{metrics}"
    );

    // A status for a message is keyed by (message id, status): each status once.
    let status = |s: &str| {
        serde_json::json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "statuses":[{"id":"wamid.out","status":s,"timestamp":"1700000001","recipient_id":"15551239999"}]}}]}]})
        .to_string()
    };
    for s in ["sent", "delivered", "sent", "read", "delivered"] {
        assert_eq!(app.post_webhook(status(s)).await.status(), 200);
    }
    assert_eq!(app.store.inbound().len(), 4);
}

async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = Vec::new();
    for f in futs {
        set.push(tokio::spawn(f));
    }
    let mut out = Vec::new();
    for h in set {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn one_post_with_many_entries_records_all_in_order() {
    let app = spawn_app().await;
    let msg = |id: &str, from: &str, text: &str| serde_json::json!({"from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}});
    let body = serde_json::json!({"object":"whatsapp_business_account","entry":[
        {"id":"1","changes":[
            {"field":"messages","value":{"messages":[msg("wamid.1","111222333444","one"), msg("wamid.2","111222333444","two")]}},
            {"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]},
        {"id":"2","changes":[
            {"field":"messages","value":{"messages":[msg("wamid.3","555666777888","three")],
             "statuses":[{"id":"wamid.x","status":"delivered","timestamp":"1700000002","recipient_id":"555666777888"}]}}]}
    ]});
    assert_eq!(app.post_webhook(body.to_string()).await.status(), 200);
    let events = app.store.inbound().all().expect("log");
    let ids: Vec<String> = events
        .iter()
        .map(|(_, e)| match &e.event {
            InboundEvent::Message(m) => m.id.as_str().to_owned(),
            InboundEvent::Status(s) => format!("{}:{}", s.message_id.as_str(), s.status.as_str()),
        })
        .collect();
    assert_eq!(ids, ["wamid.1", "wamid.2", "wamid.3", "wamid.x:delivered"]);
    app.settle().await;
}

#[tokio::test]
async fn handshake_echoes_the_challenge_only_for_our_token() {
    let app = spawn_app().await;
    let res = app
        .get(&format!(
            "/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("body"), "1158201444");

    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=test-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "",
    ] {
        let res = app.get(&format!("/webhook?{query}")).await;
        assert_eq!(res.status(), 403, "{query}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let json: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(json["database"], "ok");
    app.post_webhook(text_message("wamid.m", "15550001234", "hi"))
        .await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(
        text.contains("waotp_webhook_requests_total{result=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("waotp_events_recorded_total{kind=\"text\"} 1"),
        "{text}"
    );
    assert!(text.contains("waotp_store_flush_batch_size"), "{text}");
}
