//! The Graph API client against a local fake: the exact bodies Meta receives (snapshots), the
//! bearer header, and how every kind of failure is classified.

mod support;

use secrecy::SecretString;
use support::graph_fake::{GraphFake, PHONE_NUMBER_ID, TOKEN};
use support::http_fake::refused_address;
use waotp::domain::MessageId;
use waotp::whatsapp::{
    Button, ErrorClass, GraphClient, GraphError, MessageError, Outgoing, Row, Section, SendRequest,
};

const TO: &str = "+16505551234";

fn buttons() -> Outgoing {
    Outgoing::Buttons {
        body: "Order #A17, total ₹1,499. Confirm?".to_owned(),
        buttons: vec![
            Button {
                id: "confirm".to_owned(),
                title: "✅ Confirm".to_owned(),
            },
            Button {
                id: "cancel".to_owned(),
                title: "Cancel".to_owned(),
            },
        ],
    }
}

fn row(id: &str, title: &str, description: Option<&str>) -> Row {
    Row {
        id: id.to_owned(),
        title: title.to_owned(),
        description: description.map(str::to_owned),
    }
}

fn auth_code() -> Outgoing {
    Outgoing::AuthenticationCode {
        name: "otp_copy_code".to_owned(),
        language: "en_US".to_owned(),
        code: "482913".to_owned(),
    }
}

/// Sends `request` through the client and returns the body the fake received.
async fn sent_body(request: SendRequest) -> serde_json::Value {
    let fake = GraphFake::start().await;
    fake.client().send(&request).await.expect("accepted");
    fake.last_request().json()
}

#[tokio::test]
async fn every_message_kind_reaches_meta_as_documented() {
    let mut reply = SendRequest::new(TO, Outgoing::text("Your order is confirmed 🎉"));
    reply.reply_to = Some(MessageId::parse("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQz").expect("id"));
    reply.tracker = Some("outbox:7f3a".to_owned());
    let cases = [
        (
            "text",
            SendRequest::new("16505551234", Outgoing::text("Hi, see https://example.com")),
        ),
        ("text_reply_tracked", reply),
        ("buttons", SendRequest::new(TO, buttons())),
        (
            "list",
            SendRequest::new(
                TO,
                Outgoing::list(
                    "How should we reach you?",
                    "Choose",
                    vec![
                        row("sms", "SMS", Some("A text message")),
                        row("call", "Call", None),
                    ],
                ),
            ),
        ),
        (
            "list_sections",
            SendRequest::new(
                TO,
                Outgoing::List {
                    body: "Pick a slot".to_owned(),
                    button: "Slots".to_owned(),
                    sections: vec![
                        Section {
                            title: Some("Morning".to_owned()),
                            rows: vec![row("am9", "9:00", None)],
                        },
                        Section {
                            title: Some("Evening".to_owned()),
                            rows: vec![row("pm6", "18:00", None)],
                        },
                    ],
                },
            ),
        ),
        (
            "template",
            SendRequest::new(
                TO,
                Outgoing::Template {
                    name: "order_confirmation".to_owned(),
                    language: "en".to_owned(),
                    body_parameters: vec!["Asha".to_owned(), "A17".to_owned()],
                    quick_replies: vec![],
                },
            ),
        ),
        (
            "template_with_quick_replies",
            SendRequest::new(
                TO,
                Outgoing::Template {
                    name: "cod_order_summary".to_owned(),
                    language: "en".to_owned(),
                    // Meta refuses newlines, tabs and more than four spaces in a row here.
                    body_parameters: vec![
                        "Asha\nDevi\tRao".to_owned(),
                        "A17".to_owned(),
                        " ₹1,499      (cash) ".to_owned(),
                    ],
                    quick_replies: vec!["confirm".to_owned(), "cancel".to_owned()],
                },
            ),
        ),
        (
            "template_without_parameters",
            SendRequest::new(
                TO,
                Outgoing::Template {
                    name: "hello_world".to_owned(),
                    language: "en_US".to_owned(),
                    body_parameters: vec![],
                    quick_replies: vec![],
                },
            ),
        ),
        ("authentication_code", SendRequest::new(TO, auth_code())),
    ];
    for (name, request) in cases {
        insta::assert_json_snapshot!(name, sent_body(request).await);
    }
}

#[tokio::test]
async fn the_code_is_both_the_body_and_the_url_button_parameter() {
    let body = sent_body(SendRequest::new(TO, auth_code())).await;
    let components = &body["template"]["components"];
    assert_eq!(components[0]["type"], "body");
    assert_eq!(components[0]["parameters"][0]["text"], "482913");
    assert_eq!(components[1]["type"], "button");
    assert_eq!(components[1]["sub_type"], "url");
    assert_eq!(components[1]["index"], "0");
    assert_eq!(components[1]["parameters"][0]["text"], "482913");
}

#[tokio::test]
async fn posts_to_the_phone_number_with_the_bearer_token_and_returns_the_id() {
    let fake = GraphFake::start().await;
    fake.answer_ok("wamid.accepted.1");
    let id = fake
        .client()
        .send(&SendRequest::new(TO, Outgoing::text("hello")))
        .await
        .expect("accepted");
    assert_eq!(id.as_str(), "wamid.accepted.1");
    let request = fake.last_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, GraphFake::messages_path());
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn read_receipt_carries_the_typing_indicator() {
    let fake = GraphFake::start().await;
    let id = MessageId::parse("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUYzMjEzNDM2RTZGQ0MzMDJBRgA=")
        .expect("id");
    fake.client().mark_read(&id).await.expect("marked");
    let request = fake.last_request();
    assert_eq!(request.path, GraphFake::messages_path());
    insta::assert_json_snapshot!("read_receipt", request.json());
}

#[tokio::test]
async fn each_error_code_gets_its_class() {
    let retry = ErrorClass::Retry {
        per_recipient: false,
    };
    let cases = [
        (429, 130429, retry),
        (
            400,
            131056,
            ErrorClass::Retry {
                per_recipient: true,
            },
        ),
        (400, 131047, ErrorClass::UseTemplate),
        (400, 131026, ErrorClass::Fail),
        (400, 132001, ErrorClass::TemplateProblem),
        (400, 132015, ErrorClass::TemplateProblem),
        (401, 190, ErrorClass::Alert),
        (500, 131000, retry),
    ];
    let fake = GraphFake::start().await;
    let client = fake.client();
    for (status, code, class) in cases {
        fake.answer_error(status, code);
        let error = client
            .send(&SendRequest::new(TO, Outgoing::text("hi")))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some(code));
        assert_eq!(error.class(), class, "code {code}");
    }
}

#[tokio::test]
async fn answers_without_meta_error_json_are_classified_by_status() {
    let fake = GraphFake::start().await;
    let client = fake.client();
    let request = SendRequest::new(TO, Outgoing::text("hi"));
    let send = || client.send(&request);

    fake.answer_raw(502, "<html>Bad Gateway</html>");
    let error = send().await.expect_err("refused");
    assert_eq!(error, GraphError::Http { status: 502 });
    assert!(matches!(error.class(), ErrorClass::Retry { .. }));

    // A 2xx that names no message: Meta may have taken it, so the send is in doubt.
    fake.answer_raw(200, "not json");
    let error = send().await.expect_err("unreadable");
    assert!(matches!(error, GraphError::BadResponse(_)));
    assert_eq!(error.class(), ErrorClass::InDoubt);
    fake.answer_raw(200, r#"{"messaging_product":"whatsapp","messages":[]}"#);
    let error = send().await.expect_err("no message id");
    assert_eq!(error.class(), ErrorClass::InDoubt);
}

#[tokio::test]
async fn timeouts_are_in_doubt_and_refused_connections_are_retried() {
    let fake = GraphFake::start().await;
    fake.hang();
    let error = fake
        .client()
        .send(&SendRequest::new(TO, Outgoing::text("hi")))
        .await
        .expect_err("no answer");
    // The request was written: Meta may have accepted it, so it is not simply retried.
    assert_eq!(error, GraphError::Timeout);
    assert_eq!(error.class(), ErrorClass::InDoubt);

    let down = GraphClient::new(
        &refused_address(),
        PHONE_NUMBER_ID,
        SecretString::from(TOKEN),
    )
    .expect("client builds");
    let error = down
        .mark_read(&MessageId::parse("wamid.1").expect("id"))
        .await
        .expect_err("refused");
    assert!(matches!(error, GraphError::Network(_)), "{error:?}");
    assert!(matches!(error.class(), ErrorClass::Retry { .. }));
}

#[tokio::test]
async fn messages_breaking_whatsapp_limits_never_leave() {
    let fake = GraphFake::start().await;
    let client = fake.client();
    let four = Outgoing::Buttons {
        body: "Pick".to_owned(),
        buttons: (0..4)
            .map(|i| Button {
                id: format!("b{i}"),
                title: format!("Button {i}"),
            })
            .collect(),
    };
    let long_title = Outgoing::Buttons {
        body: "Pick".to_owned(),
        buttons: vec![Button {
            id: "b".to_owned(),
            title: "x".repeat(21),
        }],
    };
    let error = client
        .send(&SendRequest::new(TO, four))
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        GraphError::Invalid(MessageError::WrongCount {
            count: 4,
            max: 3,
            ..
        })
    ));
    assert_eq!(error.class(), ErrorClass::Fail);
    let error = client
        .send(&SendRequest::new(TO, long_title))
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        GraphError::Invalid(MessageError::TooLong {
            len: 21,
            max: 20,
            ..
        })
    ));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn template_parameters_meta_would_refuse_never_leave() {
    let fake = GraphFake::start().await;
    let client = fake.client();
    let template = |parameter: String, quick_replies: &[&str]| Outgoing::Template {
        name: "cod_order_summary".to_owned(),
        language: "en".to_owned(),
        body_parameters: vec![parameter],
        quick_replies: quick_replies.iter().map(|q| (*q).to_owned()).collect(),
    };
    // Nothing left once newlines and tabs are spaces: Meta refuses empty parameters.
    let error = client
        .send(&SendRequest::new(TO, template(" \n\t ".to_owned(), &[])))
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        GraphError::Invalid(MessageError::Empty { .. })
    ));
    // With buttons beside the body a parameter may have 1024 characters, alone 32768.
    let error = client
        .send(&SendRequest::new(TO, template("x".repeat(1025), &["ok"])))
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        GraphError::Invalid(MessageError::TooLong {
            len: 1025,
            max: 1024,
            ..
        })
    ));
    let error = client
        .send(&SendRequest::new(TO, template("x".repeat(32769), &[])))
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        GraphError::Invalid(MessageError::TooLong { max: 32768, .. })
    ));
    let eleven: Vec<String> = (0..11).map(|i| format!("q{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let error = client
        .send(&SendRequest::new(TO, template("x".to_owned(), &eleven)))
        .await
        .expect_err("refused");
    assert!(matches!(
        error,
        GraphError::Invalid(MessageError::WrongCount { max: 10, .. })
    ));
    assert!(fake.requests().is_empty());
    client
        .send(&SendRequest::new(TO, template("x".repeat(32768), &[])))
        .await
        .expect("accepted");
}

#[test]
fn debug_output_hides_the_code_the_number_and_the_token() {
    let request = SendRequest::new(TO, auth_code());
    let shown = format!("{request:?}");
    assert!(!shown.contains("482913"), "{shown}");
    assert!(!shown.contains("6505551234"), "{shown}");
    assert!(shown.contains("otp_copy_code"));

    let client = GraphClient::new(
        "https://graph.facebook.com/v23.0",
        PHONE_NUMBER_ID,
        SecretString::from(TOKEN),
    )
    .expect("client builds");
    assert!(!format!("{client:?}").contains(TOKEN));
}

#[test]
fn bad_settings_are_refused_at_build_time() {
    let token = || SecretString::from(TOKEN);
    assert!(GraphClient::new("not a url", PHONE_NUMBER_ID, token()).is_err());
    assert!(GraphClient::new("ftp://graph.example", PHONE_NUMBER_ID, token()).is_err());
    assert!(GraphClient::new("https://graph.facebook.com/v23.0", "12/../34", token()).is_err());
    assert!(GraphClient::new("https://graph.facebook.com/v23.0", "", token()).is_err());
}

/// Collects everything logged, at every level, while a code is sent and refused.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn neither_the_code_nor_the_token_reaches_a_log() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Another test's thread may have cached the client's spans as disabled (no subscriber
    // there); ask every callsite again now that this thread has one.
    tracing::callsite::rebuild_interest_cache();

    let fake = GraphFake::start().await;
    let client = fake.client();
    client
        .send(&SendRequest::new(TO, auth_code()))
        .await
        .expect("accepted");
    fake.answer_error(400, 131026);
    let error = client
        .send(&SendRequest::new(TO, auth_code()))
        .await
        .expect_err("refused");
    tracing::warn!(%error, ?error, "send failed");

    let logs = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    assert!(logs.contains("graph.send"), "nothing was logged: {logs}");
    assert!(!logs.contains("482913"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
    assert!(!logs.contains("6505551234"), "{logs}");
}

#[tokio::test]
async fn a_connection_lost_after_the_request_was_written_is_in_doubt() {
    use std::io::Read;
    // A server that reads the whole request, then hangs up without answering.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).expect("read");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        drop(socket);
        request
    });
    let client = GraphClient::new(
        &format!("http://{address}"),
        PHONE_NUMBER_ID,
        SecretString::from(TOKEN),
    )
    .expect("client builds");
    let error = client
        .send(&SendRequest::new(TO, Outgoing::text("hi")))
        .await
        .expect_err("no answer");
    let request = server.join().expect("server");
    assert!(
        String::from_utf8_lossy(&request).contains("\"hi\""),
        "the request was written"
    );
    assert!(matches!(error, GraphError::Interrupted(_)), "{error:?}");
    assert_eq!(error.class(), ErrorClass::InDoubt);
}
