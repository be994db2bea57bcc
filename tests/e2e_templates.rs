//! Templates as the real Cloud API takes and returns them, on the real server: quick-reply
//! buttons that carry the choice's id and come back as `button` messages, and template
//! parameters that Meta would refuse (newlines, tabs, long runs of spaces, empty or too long).

mod e2e_support;

use e2e_support::*;
use serde_json::{json, Value};

const COD_VARS: fn() -> Value =
    || json!({"customer_name": "Asha", "order_id": "A-1001", "total": "₹1,499"});

/// The `button` components of a template send: (index, sub_type, payload).
fn template_buttons(body: &Value) -> Vec<(String, String, String)> {
    body["template"]["components"]
        .as_array()
        .map(|components| {
            components
                .iter()
                .filter(|c| c["type"] == "button")
                .map(|c| {
                    (
                        c["index"].as_str().unwrap_or("?").to_owned(),
                        c["sub_type"].as_str().unwrap_or("?").to_owned(),
                        c["parameters"][0]["payload"]
                            .as_str()
                            .unwrap_or("?")
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The body parameters of a template send.
fn body_parameters(body: &Value) -> Vec<String> {
    body["template"]["components"]
        .as_array()
        .and_then(|components| components.iter().find(|c| c["type"] == "body"))
        .and_then(|c| c["parameters"].as_array())
        .map(|ps| {
            ps.iter()
                .map(|p| p["text"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts a COD session for a customer who has not written (so the summary is a template) and
/// returns the session id with the template send and the id WhatsApp gave it.
async fn cod_by_template(e: &E2e, customer: &str, vars: Value) -> (String, Value, String) {
    let session = e
        .api
        .start("cod_confirmation", &format!("+{customer}"), vars)
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted(customer, 1).await;
    let (body, wamid) = sent[0].clone();
    assert_eq!(body["template"]["name"], "cod_order_summary", "{body}");
    (id, body, wamid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_template_carries_each_choice_id_and_a_tap_on_confirm_confirms() {
    let e = E2e::start().await;
    let customer = "919800000101";
    let (id, summary, summary_id) = cod_by_template(&e, customer, COD_VARS()).await;
    assert_eq!(
        template_buttons(&summary),
        [
            ("0".into(), "quick_reply".into(), "confirm".into()),
            ("1".into(), "quick_reply".into(), "cancel".into())
        ]
    );

    let tap = e
        .api
        .template_tap(customer, &summary_id, "confirm", "Confirm")
        .await;
    let sent = e.graph.wait_accepted(customer, 3).await;
    let code = sent[1..]
        .iter()
        .find_map(|(b, _)| auth_code(b))
        .expect("the code in its authentication template");
    assert!(
        sent.iter()
            .all(|(b, _)| !text_of(b).is_some_and(|t| t.contains("didn't get that"))),
        "{sent:?}"
    );
    // The tap is marked read like any answered message.
    assert!(e
        .graph
        .calls()
        .iter()
        .any(|b| b["status"] == "read" && b["message_id"] == tap.as_str()));
    e.api.text(customer, &code).await;
    assert_eq!(e.api.wait_completed(&id).await["outcome"], "confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_without_our_payload_is_matched_by_its_label() {
    let e = E2e::start().await;
    // Meta echoes the label as the payload when the send set none (templates sent before
    // payloads were set): matched case-insensitively against titles and synonyms.
    let customer = "919800000102";
    let (id, _, summary_id) = cod_by_template(&e, customer, COD_VARS()).await;
    e.api
        .template_tap(customer, &summary_id, "CONFIRM", "CONFIRM")
        .await;
    e.api.wait_state(&id, "send_code").await;

    let customer = "919800000103";
    let (id, _, summary_id) = cod_by_template(&e, customer, COD_VARS()).await;
    e.api.template_tap(customer, &summary_id, "No", "No").await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "cancelled");

    // A label that is no choice is an unusable answer, re-prompted like any other.
    let customer = "919800000104";
    let (id, _, summary_id) = cod_by_template(&e, customer, COD_VARS()).await;
    e.api
        .template_tap(customer, &summary_id, "Maybe later", "Maybe later")
        .await;
    let sent = e.graph.wait_accepted(customer, 2).await;
    assert!(text_of(&sent[1].0)
        .expect("a re-prompt")
        .contains("didn't get that"));
    assert_eq!(e.api.session(&id).await["state"], "summary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_parameters_are_normalised_and_free_form_texts_keep_their_newlines() {
    let e = E2e::start().await;
    let vars = json!({"customer_name": "Asha\n Devi\tRao", "order_id": "A-1001",
                      "total": "₹1,499      (cash)"});
    let (_, summary, _) = cod_by_template(&e, "919800000105", vars.clone()).await;
    assert_eq!(
        body_parameters(&summary),
        ["Asha Devi Rao", "A-1001", "₹1,499 (cash)"]
    );

    // Inside the 24-hour window the same values go out as written.
    let customer = "919800000106";
    e.api.text(customer, "hi").await;
    e.graph.wait_accepted(customer, 1).await;
    e.api
        .start("cod_confirmation", &format!("+{customer}"), vars)
        .await;
    let sent = e.graph.wait_accepted(customer, 2).await;
    assert_eq!(sent[1].0["type"], "interactive");
    let text = text_of(&sent[1].0).expect("body");
    assert!(text.contains("Asha\n Devi\tRao"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vars_a_template_could_not_carry_are_refused_with_their_name() {
    let e = E2e::start().await;
    let with = |name: &str, value: Value| {
        let mut vars = COD_VARS();
        vars[name] = value;
        vars
    };
    let cases = [
        (
            with("customer_name", json!("")),
            "missing_var",
            "customer_name",
        ),
        (
            with("order_id", json!("  \n\t ")),
            "missing_var",
            "order_id",
        ),
        (with("total", Value::Null), "missing_var", "total"),
        // A value over the API's own limit on a var (1 KiB as JSON) is refused at the door,
        // before any template is considered.
        (
            with("customer_name", json!("A".repeat(1025))),
            "invalid_vars",
            "customer_name",
        ),
    ];
    for (vars, code, var) in cases {
        let (status, body) = e
            .api
            .start_raw("cod_confirmation", "+919800000107", vars.clone(), None)
            .await;
        assert_eq!(status, 400, "{vars}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["param"], format!("vars.{var}"), "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(var)),
            "{body}"
        );
    }
    // Spaces around a value are not a reason to refuse it, and a value within the limits fits.
    let (status, body) = e
        .api
        .start_raw(
            "cod_confirmation",
            "+919800000107",
            with("customer_name", json!(format!(" {} ", "A".repeat(1000)))),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let sent = e.graph.wait_accepted("919800000107", 1).await;
    assert_eq!(body_parameters(&sent[0].0)[0], "A".repeat(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_goes_in_the_sessions_language_when_it_has_it() {
    let e = E2e::start().await;
    let start = |to: &'static str, lang: &'static str| {
        e.api
            .http
            .post(format!("{}/v1/sessions", e.api.base))
            .bearer_auth(API_KEY)
            .json(&json!({"flow": "cod_confirmation", "to": to, "vars": COD_VARS(), "lang": lang}))
            .send()
    };
    assert_eq!(
        start("+919800000301", "hi").await.expect("start").status(),
        201
    );
    let hindi = e.graph.wait_accepted("919800000301", 1).await;
    assert_eq!(hindi[0].0["template"]["name"], "cod_order_summary");
    assert_eq!(
        hindi[0].0["template"]["language"]["code"], "hi",
        "{}",
        hindi[0].0
    );
    assert_eq!(body_parameters(&hindi[0].0), ["Asha", "A-1001", "₹1,499"]);

    // A language the template lacks falls back to the flow's default language.
    assert_eq!(
        start("+919800000302", "fr").await.expect("start").status(),
        201
    );
    let french = e.graph.wait_accepted("919800000302", 1).await;
    assert_eq!(
        french[0].0["template"]["language"]["code"], "en",
        "{}",
        french[0].0
    );
}
