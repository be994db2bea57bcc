//! WhatsApp's limits on outbound messages, checked before any network call.

use proptest::prelude::*;
use waotp::whatsapp::{Button, MessageError, Outgoing, Row, Section, SendRequest};

const TO: &str = "+919876543210";

fn check(message: Outgoing) -> Result<serde_json::Value, MessageError> {
    SendRequest::new(TO, message).graph_body()
}

fn buttons(titles: &[&str]) -> Outgoing {
    Outgoing::Buttons {
        body: "Pick one".to_owned(),
        buttons: titles
            .iter()
            .enumerate()
            .map(|(i, t)| Button {
                id: format!("b{i}"),
                title: (*t).to_owned(),
            })
            .collect(),
    }
}

fn rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: format!("r{i}"),
            title: format!("Row {i}"),
            description: None,
        })
        .collect()
}

#[test]
fn reply_buttons_are_one_to_three_with_short_unique_titles() {
    assert!(check(buttons(&["Yes", "No", "Later"])).is_ok());
    assert!(matches!(
        check(buttons(&[])),
        Err(MessageError::WrongCount { count: 0, .. })
    ));
    assert!(matches!(
        check(buttons(&["a", "b", "c", "d"])),
        Err(MessageError::WrongCount { count: 4, .. })
    ));
    // Characters, not bytes: twenty emoji are twenty characters.
    assert!(check(buttons(&[&"✅".repeat(20)])).is_ok());
    assert!(matches!(
        check(buttons(&[&"✅".repeat(21)])),
        Err(MessageError::TooLong {
            len: 21,
            max: 20,
            ..
        })
    ));
    assert!(matches!(
        check(buttons(&["  "])),
        Err(MessageError::Empty { .. })
    ));
    assert!(matches!(
        check(buttons(&["Same", "Same"])),
        Err(MessageError::Duplicate { .. })
    ));
}

#[test]
fn lists_hold_at_most_ten_rows_across_sections() {
    assert!(check(Outgoing::list("Pick", "Open", rows(10))).is_ok());
    assert!(matches!(
        check(Outgoing::list("Pick", "Open", rows(11))),
        Err(MessageError::WrongCount { count: 11, .. })
    ));
    let split = |first: Option<&str>| Outgoing::List {
        body: "Pick".to_owned(),
        button: "Open".to_owned(),
        sections: vec![
            Section {
                title: first.map(str::to_owned),
                rows: rows(6),
            },
            Section {
                title: Some("More".to_owned()),
                rows: rows(6)
                    .into_iter()
                    .map(|mut r| {
                        r.id.push('x');
                        r
                    })
                    .collect(),
            },
        ],
    };
    assert!(matches!(
        check(split(Some("Some"))),
        Err(MessageError::WrongCount { count: 12, .. })
    ));
    let mut two = split(None);
    if let Outgoing::List { sections, .. } = &mut two {
        sections.iter_mut().for_each(|s| s.rows.truncate(2));
    }
    assert_eq!(check(two), Err(MessageError::UntitledSection));
}

#[test]
fn list_fields_have_meta_lengths() {
    let mut long_row = rows(1);
    long_row[0].title = "x".repeat(25);
    assert!(matches!(
        check(Outgoing::list("Pick", "Open", long_row)),
        Err(MessageError::TooLong { max: 24, .. })
    ));
    let mut long_description = rows(1);
    long_description[0].description = Some("x".repeat(73));
    assert!(matches!(
        check(Outgoing::list("Pick", "Open", long_description)),
        Err(MessageError::TooLong { max: 72, .. })
    ));
    assert!(matches!(
        check(Outgoing::list("Pick", "x".repeat(21), rows(1))),
        Err(MessageError::TooLong { max: 20, .. })
    ));
    let mut repeated = rows(2);
    repeated[1].id = repeated[0].id.clone();
    assert!(matches!(
        check(Outgoing::list("Pick", "Open", repeated)),
        Err(MessageError::Duplicate { .. })
    ));
}

#[test]
fn texts_and_codes_have_meta_lengths() {
    assert!(check(Outgoing::text("x".repeat(4096))).is_ok());
    assert!(matches!(
        check(Outgoing::text("x".repeat(4097))),
        Err(MessageError::TooLong { max: 4096, .. })
    ));
    assert!(matches!(
        check(Outgoing::text("")),
        Err(MessageError::Empty { .. })
    ));
    let code = |code: &str| Outgoing::AuthenticationCode {
        name: "otp".to_owned(),
        language: "en".to_owned(),
        code: code.to_owned(),
    };
    assert!(check(code("1234567890")).is_ok());
    assert!(matches!(
        check(code(&"1".repeat(16))),
        Err(MessageError::TooLong { max: 15, .. })
    ));
}

#[test]
fn recipients_are_digits_with_an_optional_plus() {
    for good in ["+919876543210", "16505551234"] {
        assert!(SendRequest::new(good, Outgoing::text("hi"))
            .graph_body()
            .is_ok());
    }
    for bad in [
        "",
        "+",
        "+91 98765 43210",
        "abc",
        "1234",
        "+1234567890123456",
        "99912345678",
        "+1415555010",
    ] {
        assert_eq!(
            SendRequest::new(bad, Outgoing::text("hi")).graph_body(),
            Err(MessageError::InvalidRecipient),
            "{bad:?}"
        );
    }
    let mut tracked = SendRequest::new(TO, Outgoing::text("hi"));
    tracked.tracker = Some("t".repeat(513));
    assert!(matches!(
        tracked.graph_body(),
        Err(MessageError::TooLong { max: 512, .. })
    ));
}

#[test]
fn a_business_scoped_user_id_is_addressed_as_recipient_and_gets_no_authentication_template() {
    for user_id in ["US.13491208655302741918", "US.ENT.11815799212886844830"] {
        let body = SendRequest::new(user_id, Outgoing::text("hi"))
            .graph_body()
            .expect("valid");
        assert_eq!(body["recipient"], user_id);
        assert!(body.get("to").is_none(), "Meta: `to` would take precedence");
        let template = Outgoing::Template {
            name: "order_update".into(),
            language: "en".into(),
            body_parameters: vec![],
            quick_replies: vec![],
        };
        assert!(SendRequest::new(user_id, template).graph_body().is_ok());
        let code = Outgoing::AuthenticationCode {
            name: "otp_code".into(),
            language: "en".into(),
            code: "123456".into(),
        };
        assert_eq!(
            SendRequest::new(user_id, code).graph_body(),
            Err(MessageError::NeedsPhoneNumber)
        );
    }
    let body = SendRequest::new(TO, Outgoing::text("hi"))
        .graph_body()
        .expect("valid");
    assert_eq!(body["to"], TO);
    assert!(body.get("recipient").is_none());
}

proptest! {
    #[test]
    fn a_title_is_accepted_exactly_when_it_fits(title in "[a-zA-Z0-9 éü✅]{1,30}") {
        let fits = title.chars().count() <= 20 && !title.trim().is_empty();
        let body = check(buttons(&[&title]));
        prop_assert_eq!(body.is_ok(), fits);
        if let Ok(body) = body {
            prop_assert_eq!(&body["interactive"]["action"]["buttons"][0]["reply"]["title"], &serde_json::json!(title));
        }
    }
}
