//! Conformance with real WhatsApp webhook bodies (`../shared/fixtures/webhooks-pywa`): every case
//! of every file, correctly signed, gets 200 from the real server, and the fields our domain uses
//! come through unchanged. Each case gets a fresh server and store, since the fixtures reuse
//! message ids. Skipped, with a message, where the fixtures folder is absent.

mod common;

use serde_json::Value;
use waotp::domain::{InboundEvent, MessageContent};

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// What the domain must carry for one raw message.
fn check_message(raw: &Value, m: &waotp::domain::InboundMessage, case: &str) {
    assert_eq!(m.id.as_str(), raw["id"].as_str().expect("id"), "{case}");
    assert_eq!(
        m.from.as_str(),
        raw["from"].as_str().expect("from"),
        "{case}"
    );
    let ts: i64 = raw["timestamp"].as_str().expect("ts").parse().expect("int");
    assert_eq!(m.timestamp, ts, "{case}");
    if let Some(uid) = raw.get("from_user_id") {
        assert_eq!(m.user_id, s(uid), "{case}");
    }
    if let Some(ctx) = raw.get("context").and_then(|c| c.get("id")) {
        let got = m.context.as_ref().and_then(|c| c.message_id.as_ref());
        assert_eq!(got.map(|i| i.as_str()), ctx.as_str(), "{case}");
    }
    let errors: Vec<i64> = raw["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["code"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(
        m.errors.iter().map(|e| e.code).collect::<Vec<_>>(),
        errors,
        "{case}"
    );
    let kind = raw["type"].as_str().unwrap_or_default();
    match (&m.content, kind) {
        (MessageContent::Text { body }, "text") => {
            assert_eq!(Some(body.clone()), s(&raw["text"]["body"]), "{case}")
        }
        (MessageContent::ButtonReply { id, title }, "interactive") => {
            let r = &raw["interactive"]["button_reply"];
            assert_eq!(
                (Some(id.clone()), Some(title.clone())),
                (s(&r["id"]), s(&r["title"])),
                "{case}"
            );
        }
        (
            MessageContent::ListReply {
                id,
                title,
                description,
            },
            "interactive",
        ) => {
            let r = &raw["interactive"]["list_reply"];
            assert_eq!(
                (Some(id.clone()), Some(title.clone())),
                (s(&r["id"]), s(&r["title"])),
                "{case}"
            );
            assert_eq!(description.clone(), s(&r["description"]), "{case}");
        }
        (MessageContent::FlowReply { response_json, .. }, "interactive") => {
            assert_eq!(
                Some(response_json.clone()),
                s(&raw["interactive"]["nfm_reply"]["response_json"]),
                "{case}"
            )
        }
        (MessageContent::Unsupported { kind: got }, "interactive") => {
            // Only interactive kinds we do not model (e.g. call permission replies), or a body
            // WhatsApp could not deliver, may come through as unsupported.
            let sub = raw["interactive"]["type"].as_str().unwrap_or("interactive");
            assert!(
                !["button_reply", "list_reply", "nfm_reply"].contains(&sub),
                "{case}: interactive {sub} body lost"
            );
            assert_eq!(got, sub, "{case}");
        }
        (MessageContent::QuickReply { payload, text }, "button") => {
            assert_eq!(
                Some(payload.clone()),
                s(&raw["button"]["payload"]),
                "{case}"
            );
            assert_eq!(Some(text.clone()), s(&raw["button"]["text"]), "{case}");
        }
        (
            MessageContent::Media { media_id, .. },
            "image" | "video" | "audio" | "document" | "sticker",
        ) => {
            assert_eq!(Some(media_id.clone()), s(&raw[kind]["id"]), "{case}")
        }
        (MessageContent::Location { latitude, .. }, "location") => {
            assert_eq!(
                Some(*latitude),
                raw["location"]["latitude"].as_f64(),
                "{case}"
            )
        }
        (MessageContent::Contacts { names }, "contacts") => {
            assert_eq!(
                names.len(),
                raw["contacts"].as_array().map_or(0, Vec::len),
                "{case}"
            )
        }
        (MessageContent::Reaction { message_id, emoji }, "reaction") => {
            assert_eq!(
                message_id.as_ref().map(|i| i.as_str().to_owned()),
                s(&raw["reaction"]["message_id"]),
                "{case}"
            );
            assert_eq!(
                emoji.clone(),
                s(&raw["reaction"]["emoji"]).filter(|e| !e.is_empty()),
                "{case}"
            );
        }
        (MessageContent::Order { items, .. }, "order") => {
            assert_eq!(
                Some(*items),
                raw["order"]["product_items"].as_array().map(Vec::len),
                "{case}"
            )
        }
        (MessageContent::System { body, .. }, "system") => {
            assert_eq!(body.clone(), s(&raw["system"]["body"]), "{case}")
        }
        (
            MessageContent::Revoked {
                original_message_id,
            },
            "revoke",
        ) => assert_eq!(
            original_message_id.as_ref().map(|i| i.as_str().to_owned()),
            s(&raw["revoke"]["original_message_id"]),
            "{case}"
        ),
        (
            MessageContent::Edited {
                original_message_id,
                text,
            },
            "edit",
        ) => {
            assert_eq!(
                original_message_id.as_ref().map(|i| i.as_str().to_owned()),
                s(&raw["edit"]["original_message_id"]),
                "{case}"
            );
            assert_eq!(
                text.clone(),
                s(&raw["edit"]["message"]["image"]["caption"]),
                "{case}"
            );
        }
        (MessageContent::Unsupported { kind: got }, "unsupported") => {
            let want = s(&raw["unsupported"]["type"]).unwrap_or_else(|| "unsupported".into());
            assert_eq!(got, &want, "{case}");
        }
        (content, kind) => panic!("{case}: type {kind} parsed as {content:?}"),
    }
}

fn check_status(raw: &Value, st: &waotp::domain::DeliveryStatus, case: &str) {
    assert_eq!(
        st.message_id.as_str(),
        raw["id"].as_str().expect("id"),
        "{case}"
    );
    assert_eq!(
        st.status.as_str(),
        raw["status"].as_str().expect("status"),
        "{case}"
    );
    assert_eq!(
        Some(st.recipient.as_str().to_owned()),
        s(&raw["recipient_id"]),
        "{case}"
    );
    let ts: i64 = raw["timestamp"].as_str().expect("ts").parse().expect("int");
    assert_eq!(st.timestamp, ts, "{case}");
    let errors: Vec<i64> = raw["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["code"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(
        st.errors.iter().map(|e| e.code).collect::<Vec<_>>(),
        errors,
        "{case}"
    );
    assert_eq!(
        st.callback_data,
        s(&raw["biz_opaque_callback_data"]),
        "{case}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_case_is_accepted_and_parsed_without_loss() {
    let Some(dir) = common::fixtures_dir() else {
        eprintln!("SKIPPED: ../shared/fixtures/webhooks-pywa not found (set WAOTP_FIXTURES_DIR)");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixture files in {}", dir.display());
    let (mut cases, mut messages, mut statuses) = (0, 0, 0);
    for file in files {
        let raw_file = std::fs::read_to_string(&file).expect("read fixture");
        let all: serde_json::Map<String, Value> =
            serde_json::from_str(&raw_file).expect("fixture json");
        for (name, body) in all {
            let case = format!(
                "{}[{name}]",
                file.file_name().expect("name").to_string_lossy()
            );
            let app = common::spawn_app().await;
            let bytes = serde_json::to_vec(&body).expect("body");
            let res = app.post_webhook(bytes).await;
            assert_eq!(res.status(), 200, "{case}");
            cases += 1;

            let mut expected_messages = Vec::new();
            let mut expected_statuses = Vec::new();
            for entry in body["entry"].as_array().expect("entry") {
                for change in entry["changes"].as_array().expect("changes") {
                    if change["field"] == "messages" {
                        let v = &change["value"];
                        expected_messages
                            .extend(v["messages"].as_array().cloned().unwrap_or_default());
                        expected_statuses
                            .extend(v["statuses"].as_array().cloned().unwrap_or_default());
                    }
                }
            }
            let stored = app.store.inbound().all().expect("log");
            assert_eq!(
                stored.len(),
                expected_messages.len() + expected_statuses.len(),
                "{case}"
            );
            let (mut mi, mut si) = (0, 0);
            for (_, ev) in &stored {
                match &ev.event {
                    InboundEvent::Message(m) => {
                        check_message(&expected_messages[mi], m, &case);
                        mi += 1;
                        messages += 1;
                    }
                    InboundEvent::Status(st) => {
                        check_status(&expected_statuses[si], st, &case);
                        si += 1;
                        statuses += 1;
                    }
                }
            }
            // Business-scoped user ids come through where WhatsApp sends them.
            if let Some(InboundEvent::Message(m)) = stored.first().map(|(_, e)| &e.event) {
                let uid =
                    body["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"].as_str();
                if let Some(uid) = uid {
                    assert_eq!(m.user_id.as_deref(), Some(uid), "{case}");
                }
            }
            app.settle().await;
        }
    }
    eprintln!("fixture conformance: {cases} cases, {messages} messages, {statuses} statuses");
    assert!(cases >= 60, "only {cases} fixture cases ran");
    assert!(messages > 0 && statuses > 0);
}
