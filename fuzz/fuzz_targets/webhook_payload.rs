//! The webhook body parser on arbitrary bytes: it must never panic or overflow its stack, must
//! refuse anything that is not UTF-8 (no JSON document is), and whatever it accepts must come
//! out as well-formed events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waotp::domain::InboundEvent;
use waotp::webhook::payload;

fuzz_target!(|data: &[u8]| {
    let parsed = payload::parse(data);
    if std::str::from_utf8(data).is_err() {
        assert!(parsed.is_err(), "accepted a body that is not UTF-8");
    }
    let Ok(parsed) = parsed else { return };
    for event in &parsed.events {
        assert!(!event.dedupe_key().is_empty());
        assert!(!event.customer().as_str().is_empty());
        if let InboundEvent::Message(m) = event {
            assert!(!m.id.as_str().is_empty());
        }
    }
});
