//! The fuzz targets' properties (see `fuzz/`), checked in every `cargo test` on a bounded
//! number of random inputs, so a regression shows without a nightly toolchain or a fuzzing
//! run. Inputs are the real webhook bodies (and a built-in one) with random byte edits: flips,
//! insertions, deletions, truncation and runs of brackets. The flow loader has its own
//! property test in `load_props.rs`.

mod common;

use proptest::prelude::*;
use waotp::webhook::payload;
use waotp::webhook::signature::SignatureVerifier;

/// Real webhook bodies: the shared fixtures when present, else one built here.
fn seeds() -> Vec<Vec<u8>> {
    let mut out =
        vec![common::text_message("wamid.seed", "15551230000", "Caf\u{e9} 123456").into_bytes()];
    if let Some(dir) = common::fixtures_dir() {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("fixtures")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        out.extend(files.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Nest(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Edit::Flip(at, x)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..5000).prop_map(|(at, n)| Edit::Nest(at, n)),
    ]
}

fn apply(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: &usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, x) if !body.is_empty() => {
                let i = i % body.len();
                body[i] ^= x;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, bytes) => {
                let i = at(i, body.len());
                body.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(i, body.len());
                let end = (i + n).min(body.len());
                body.drain(i..end);
            }
            Edit::Truncate(i) => body.truncate(at(i, body.len())),
            Edit::Nest(i, n) => {
                let i = at(i, body.len());
                let nested = [vec![b'['; *n], vec![b']'; *n]].concat();
                body.splice(i..i, nested);
            }
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn edited_webhook_bodies_never_panic_and_non_utf8_is_refused(which in any::<prop::sample::Index>(), edits in proptest::collection::vec(edit(), 1..6)) {
        let seeds = seeds();
        let body = apply(seeds[which.index(seeds.len())].clone(), &edits);
        let parsed = payload::parse(&body);
        if std::str::from_utf8(&body).is_err() {
            prop_assert!(parsed.is_err(), "accepted a body that is not UTF-8");
        }
        if let Ok(parsed) = parsed {
            for event in &parsed.events {
                prop_assert!(!event.dedupe_key().is_empty());
                prop_assert!(!event.customer().as_str().is_empty());
            }
        }
    }

    #[test]
    fn only_the_bodys_own_signature_passes(secret in proptest::collection::vec(any::<u8>(), 0..80), header in proptest::collection::vec(any::<u8>(), 0..80), body in proptest::collection::vec(any::<u8>(), 0..200), flip in any::<prop::sample::Index>()) {
        let verifier = SignatureVerifier::new(&secret);
        let expected = verifier.sign(&body);
        prop_assert_eq!(verifier.verify(Some(expected.as_bytes()), &body), Ok(()));
        if verifier.verify(Some(&header), &body).is_ok() {
            prop_assert!(header.eq_ignore_ascii_case(expected.as_bytes()));
        }
        // One changed hex digit is always refused.
        let mut near = expected.clone().into_bytes();
        let i = 7 + flip.index(64);
        near[i] = if near[i] == b'0' { b'1' } else { b'0' };
        prop_assert!(verifier.verify(Some(&near), &body).is_err());
    }
}
