//! `waotp tenants check` and `waotp tenants key-digest`: the operator's tools for the tenants
//! file (docs/tenants.md).
//!
//! Nothing here prints a secret: the check shows merchants, numbers and where flows are, and
//! whether each number sends, never a token, a callback secret or a key (nor the credentials or
//! query string a callback URL may carry).

use std::io::{Read, Write};
use std::path::Path;

use crate::tenants::{file, FlowSource, KeyDigest};

/// Checks the file and lists what it declares; 0 when valid, 1 with every problem otherwise.
pub fn check(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let tenants = match file::read(path, &|name| std::env::var(name).ok()) {
        Ok(t) => t,
        Err(errors) => {
            let _ = writeln!(err, "{errors}");
            return 1;
        }
    };
    let mut numbers = 0;
    for m in tenants.merchants() {
        let _ = writeln!(
            out,
            "merchant {}: {} API key(s), {}{}{}",
            m.id,
            m.api_keys.len(),
            describe_flows(&m.flows),
            m.callback_url
                .as_deref()
                .map(|u| format!(", callbacks to {}", without_credentials(u)))
                .unwrap_or_default(),
            m.waba_id
                .as_deref()
                .map(|w| format!(", WABA {w}"))
                .unwrap_or_default(),
        );
        for n in &m.numbers {
            numbers += 1;
            let _ = writeln!(
                out,
                "  number {}{}: {}, {} sends/s",
                n.phone_number_id,
                n.business_number
                    .as_deref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default(),
                if n.access_token.is_some() {
                    "sends to WhatsApp"
                } else {
                    "sandbox"
                },
                n.sends_per_second,
            );
        }
    }
    let _ = writeln!(
        out,
        "{}: {} merchant(s), {numbers} number(s) valid{}",
        path.display(),
        tenants.merchants().len(),
        if tenants.sandbox() {
            " (sandbox mode: no number has an access token)"
        } else {
            ""
        }
    );
    0
}

/// `url` without what may be a credential: a `user:password@` and the query string.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let path = &rest[end..];
    let path = match path.find(['?', '#']) {
        Some(i) => format!("{}?…", &path[..i]),
        None => path.to_owned(),
    };
    format!("{scheme}://{host}{path}")
}

/// Where a merchant's flows are read from.
fn describe_flows(flows: &FlowSource) -> String {
    match flows {
        FlowSource::Dir(_) => format!("flows in {flows}"),
        FlowSource::Files(_) => format!("flows {flows}"),
    }
}

/// Reads an API key from `input` and prints the digest a tenants file stores for it; 2 when
/// the input holds no key.
pub fn key_digest(input: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let mut key = String::new();
    if let Err(e) = input.read_to_string(&mut key) {
        let _ = writeln!(err, "waotp tenants key-digest: cannot read the key: {e}");
        return 2;
    }
    // Keys are trimmed where they are read from settings too, so a trailing newline from
    // `echo` or a file gives the same digest as the key.
    let key = key.trim();
    if key.is_empty() {
        let _ = writeln!(
            err,
            "waotp tenants key-digest: give the API key on standard input"
        );
        return 2;
    }
    let _ = writeln!(
        out,
        "{}{}",
        file::DIGEST_PREFIX,
        KeyDigest::of(key.as_bytes()).hex()
    );
    0
}
