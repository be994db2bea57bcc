//! `X-Hub-Signature-256` checking on arbitrary secrets, headers and bodies: never a panic, the
//! verifier's own signature always passes, and no header other than that signature (up to the
//! case of its hex digits) ever passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waotp::webhook::signature::SignatureVerifier;

fuzz_target!(|data: &[u8]| {
    // Layout: [secret length][secret][header length][header][body].
    let Some((&secret_len, rest)) = data.split_first() else {
        return;
    };
    let (secret, rest) = rest.split_at(usize::from(secret_len).min(rest.len()));
    let Some((&header_len, rest)) = rest.split_first() else {
        return;
    };
    let (header, body) = rest.split_at(usize::from(header_len).min(rest.len()));

    let verifier = SignatureVerifier::new(secret);
    let expected = verifier.sign(body);
    assert_eq!(verifier.verify(Some(expected.as_bytes()), body), Ok(()));
    if verifier.verify(Some(header), body).is_ok() {
        assert!(
            header.eq_ignore_ascii_case(expected.as_bytes()),
            "accepted a header that is not the body's signature"
        );
    }
});
