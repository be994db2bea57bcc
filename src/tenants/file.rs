//! The tenants file (`WAOTP_TENANTS`): one `[[merchant]]` table per merchant and one
//! `[[merchant.number]]` table per number, read into [`Merchant`]s and [`Number`]s and checked
//! with `file:line:col` diagnostics, like flow files (docs/tenants.md describes the format).
//!
//! Owns the file's shape and every check that needs a position in it; the registry's own
//! invariants stay in [`Tenants::new`]. Secrets never appear in the file: API keys as digests,
//! tokens and callback secrets as the names of environment variables, looked up here. No
//! message built here quotes a value that could be a secret.

use std::collections::HashMap;
use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;

use super::{FlowSource, KeyDigest, Merchant, Number, Tenants, TenantsError};
use crate::config::{DEFAULT_SENDS_PER_SECOND, MAX_SENDS_PER_SECOND};
use crate::flow::load::parse_toml;
use crate::flow::located::{line_col, Located};
use crate::flow::Diagnostic;

/// The longest merchant id.
pub const MAX_MERCHANT_ID: usize = 32;

/// How an API key's digest is written: `sha256:` and 64 hex digits.
pub const DIGEST_PREFIX: &str = "sha256:";

/// Looks up an environment variable; `None` when unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    merchant: Vec<MerchantTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantTable {
    id: Located<String>,
    #[serde(default)]
    api_keys: Vec<Located<String>>,
    callback_url: Option<Located<String>>,
    callback_secret_env: Option<Located<String>>,
    hook_base_url: Option<Located<String>>,
    flows: Option<Located<String>>,
    flow_files: Option<Located<Vec<Located<String>>>>,
    otp_sends_per_hour: Option<Located<u32>>,
    otp_allowed_prefixes: Option<Vec<Located<String>>>,
    waba_id: Option<Located<String>>,
    #[serde(default)]
    number: Vec<NumberTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberTable {
    phone_number_id: Located<String>,
    business_number: Option<Located<String>>,
    access_token_env: Option<Located<String>>,
    sends_per_second: Option<Located<u32>>,
}

/// Reads and checks the tenants file at `path`. Relative paths in it resolve against its
/// directory. The error lists every problem, one `file:line:col: message` per line.
pub fn read(path: &Path, env: Env<'_>) -> Result<Tenants, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parse(&path.display().to_string(), &text, base, env).map_err(|diags| {
        diags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Parses and checks a tenants file's text. `name` is how the file is named in messages,
/// `base` the directory relative paths resolve against, `env` where the variables the file
/// names are looked up. Every problem is reported at once where one does not hide another.
pub fn parse(
    name: &str,
    text: &str,
    base: &Path,
    env: Env<'_>,
) -> Result<Tenants, Vec<Diagnostic>> {
    let parsed = parse_toml::<FileShape>(text);
    let at = |offset: usize, message: String| {
        let lc = line_col(text, offset);
        Diagnostic {
            file: name.to_owned(),
            line: lc.line,
            col: lc.col,
            message,
        }
    };
    let mut diags: Vec<Diagnostic> = parsed
        .errors
        .iter()
        .map(|(offset, message)| at(*offset, hide_values(message)))
        .collect();
    let Some(file) = parsed.file else {
        return Err(finish(diags));
    };
    let place = |offset: usize| {
        let lc = line_col(text, parsed.edits.original(offset));
        format!("{name}:{}:{}", lc.line, lc.col)
    };
    let mut checker = Checker {
        place: &place,
        base,
        env,
        issues: Vec::new(),
        merchants: HashMap::new(),
        numbers: HashMap::new(),
        business_numbers: HashMap::new(),
        keys: HashMap::new(),
    };
    if file.merchant.is_empty() {
        checker.issue(
            0,
            "the file declares no merchant; add a [[merchant]] table".into(),
        );
    }
    let merchants: Vec<Merchant> = file
        .merchant
        .iter()
        .filter_map(|m| checker.merchant(m))
        .collect();
    let original = |offset: usize| parsed.edits.original(offset);
    diags.extend(
        checker
            .issues
            .into_iter()
            .map(|(offset, message)| at(original(offset), message)),
    );
    if !diags.is_empty() {
        return Err(finish(diags));
    }
    // Every rule of `Tenants::new` is checked above with its position; should one still fail,
    // it is reported at the merchant it names.
    let id_at: HashMap<&str, usize> = file
        .merchant
        .iter()
        .map(|m| (m.id.as_str(), original(m.id.span().start)))
        .collect();
    Tenants::new(merchants)
        .map(Tenants::declared_in_file)
        .map_err(|e| {
            let merchant = match &e {
                TenantsError::DuplicateMerchant(id) | TenantsError::NoNumber(id) => id,
                TenantsError::DuplicateNumber { second, .. }
                | TenantsError::DuplicateKey { second, .. } => second,
            };
            vec![at(
                id_at.get(merchant.as_str()).copied().unwrap_or(0),
                e.to_string(),
            )]
        })
}

fn finish(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort();
    diags.dedup();
    diags
}

/// toml's type errors quote the value (`invalid type: string "…"`); a misplaced secret must not
/// reach a terminal or a log that way.
fn hide_values(message: &str) -> String {
    for prefix in ["invalid type: string ", "invalid value: string "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let kind = &prefix[..prefix.len() - "string ".len()];
            return match rest.rfind(", expected ") {
                Some(i) => format!("{kind}a string{}", &rest[i..]),
                None => format!("{kind}a string"),
            };
        }
    }
    message.to_owned()
}

/// Where each thing that must be unique was first declared (offsets in the parsed text).
struct Checker<'a> {
    /// `file:line:col` of an offset in the parsed text, for "first declared at" hints.
    place: &'a dyn Fn(usize) -> String,
    base: &'a Path,
    env: Env<'a>,
    issues: Vec<(usize, String)>,
    merchants: HashMap<String, usize>,
    /// phone_number_id → (merchant, offset).
    numbers: HashMap<String, (String, usize)>,
    business_numbers: HashMap<String, (String, usize)>,
    keys: HashMap<KeyDigest, (String, usize)>,
}

impl Checker<'_> {
    fn issue(&mut self, offset: usize, message: String) {
        self.issues.push((offset, message));
    }

    /// A merchant, or `None` when any of its values is wrong (the problems are recorded).
    fn merchant(&mut self, m: &MerchantTable) -> Option<Merchant> {
        let before = self.issues.len();
        let id = m.id.as_str().to_owned();
        let id_at = m.id.span().start;
        if !valid_merchant_id(&id) {
            self.issue(
                id_at,
                format!(
                    "merchant id `{id}` must be 1 to {MAX_MERCHANT_ID} characters of a-z, 0-9, `_` and `-`"
                ),
            );
        } else if let Some(first) = self.merchants.get(&id).copied() {
            self.issue(
                id_at,
                format!(
                    "merchant `{id}` is declared twice (first at {})",
                    (self.place)(first)
                ),
            );
        } else {
            self.merchants.insert(id.clone(), id_at);
        }
        let api_keys = m
            .api_keys
            .iter()
            .filter_map(|k| self.api_key(&id, k))
            .collect::<Vec<_>>();
        for url in [&m.callback_url, &m.hook_base_url].into_iter().flatten() {
            if !(url.as_str().starts_with("http://") || url.as_str().starts_with("https://")) {
                self.issue(
                    url.span().start,
                    format!("`{}` is not an http(s) URL", url.as_str()),
                );
            }
        }
        let callback_secret = m
            .callback_secret_env
            .as_ref()
            .and_then(|name| self.secret(name, "callback_secret_env"));
        let flows = self.flows(m);
        if let Some(n) = &m.otp_sends_per_hour {
            let range = crate::otp::policy::GLOBAL_CEILING_RANGE;
            if !range.contains(n.get()) {
                self.issue(
                    n.span().start,
                    format!(
                        "otp_sends_per_hour must be from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
            }
        }
        for prefix in m.otp_allowed_prefixes.iter().flatten() {
            if crate::otp::policy::prefix_digits(prefix.as_str()).is_none() {
                self.issue(
                    prefix.span().start,
                    format!(
                        "`{}` is not a phone number prefix such as +91",
                        prefix.as_str()
                    ),
                );
            }
        }
        if let Some(waba) = &m.waba_id {
            let w = waba.as_str();
            if w.is_empty() || !w.chars().all(|c| c.is_ascii_alphanumeric()) {
                self.issue(
                    waba.span().start,
                    "waba_id must be letters and digits only".into(),
                );
            }
        }
        if m.number.is_empty() {
            self.issue(
                id_at,
                format!("merchant `{id}` has no number; add a [[merchant.number]] table"),
            );
        }
        let numbers: Vec<Number> = m
            .number
            .iter()
            .filter_map(|n| self.number(&id, n))
            .collect();
        // A merchant that sends to WhatsApp must be reachable by the API and sign what it
        // sends its own servers, as the single-merchant setup must outside sandbox mode.
        if m.number.iter().any(|n| n.access_token_env.is_some()) {
            if m.api_keys.is_empty() {
                self.issue(
                    id_at,
                    format!("merchant `{id}` sends to WhatsApp (a number has access_token_env) and needs api_keys"),
                );
            }
            if m.callback_secret_env.is_none() {
                self.issue(
                    id_at,
                    format!("merchant `{id}` sends to WhatsApp (a number has access_token_env) and needs callback_secret_env"),
                );
            }
        }
        if self.issues.len() > before {
            return None;
        }
        Some(Merchant {
            id,
            api_keys,
            callback_url: m.callback_url.as_ref().map(|u| u.get().clone()),
            callback_secret,
            hook_base_url: m.hook_base_url.as_ref().map(|u| u.get().clone()),
            flows: flows?,
            otp_sends_per_hour: m.otp_sends_per_hour.as_ref().map(|n| *n.get()),
            otp_allowed_prefixes: m
                .otp_allowed_prefixes
                .as_ref()
                .map(|p| p.iter().map(|p| p.get().clone()).collect()),
            waba_id: m.waba_id.as_ref().map(|w| w.get().clone()),
            numbers,
        })
    }

    fn api_key(&mut self, merchant: &str, key: &Located<String>) -> Option<KeyDigest> {
        let at = key.span().start;
        // The value is never quoted: a key pasted here by mistake must not be printed.
        let Some(digest) = key
            .as_str()
            .strip_prefix(DIGEST_PREFIX)
            .filter(|hex| hex.len() == 64)
            .and_then(KeyDigest::from_hex)
        else {
            self.issue(
                at,
                "an API key is written as its digest, `sha256:` and 64 hex digits (`waotp tenants key-digest` prints it), never as the key".into(),
            );
            return None;
        };
        if let Some((first, first_at)) = self.keys.get(&digest) {
            let message = format!(
                "this API key is also a key of merchant `{first}` ({})",
                (self.place)(*first_at)
            );
            self.issue(at, message);
            return None;
        }
        self.keys.insert(digest, (merchant.to_owned(), at));
        Some(digest)
    }

    /// The value of the environment variable `name` names; an unset or empty one is a problem
    /// named by the variable (its value, if any, is never shown).
    fn secret(&mut self, name: &Located<String>, key: &str) -> Option<SecretString> {
        let var = name.as_str();
        if !valid_env_name(var) {
            self.issue(
                name.span().start,
                format!("{key} names an environment variable: letters, digits and `_`, not starting with a digit"),
            );
            return None;
        }
        match (self.env)(var).filter(|v| !v.trim().is_empty()) {
            Some(value) => Some(SecretString::from(value.trim().to_owned())),
            None => {
                self.issue(
                    name.span().start,
                    match conventional_env_name(var) {
                        true => format!("environment variable `{var}` ({key}) is unset or empty"),
                        // Not shown: a secret pasted in place of its variable's name looks so.
                        false => format!("the environment variable {key} names is unset or empty (the name is not shown: names are usually upper-case, such as ACME_TOKEN; is a secret written here?)"),
                    },
                );
                None
            }
        }
    }

    fn flows(&mut self, m: &MerchantTable) -> Option<FlowSource> {
        match (&m.flows, &m.flow_files) {
            (Some(dir), None) => {
                let path = self.base.join(dir.get());
                if !path.is_dir() {
                    self.issue(
                        dir.span().start,
                        format!("flows directory `{}` does not exist", path.display()),
                    );
                    return None;
                }
                Some(FlowSource::Dir(path))
            }
            (None, Some(files)) => {
                if files.get().is_empty() {
                    self.issue(files.span().start, "flow_files lists no file".into());
                    return None;
                }
                let mut paths = Vec::new();
                for f in files.get() {
                    let path = self.base.join(f.get());
                    if !path.is_file() {
                        self.issue(
                            f.span().start,
                            format!("flow file `{}` does not exist", path.display()),
                        );
                    }
                    paths.push(path);
                }
                Some(FlowSource::Files(paths))
            }
            (Some(_), Some(files)) => {
                self.issue(
                    files.span().start,
                    "give either `flows` (a directory) or `flow_files` (a list), not both".into(),
                );
                None
            }
            (None, None) => {
                self.issue(
                    m.id.span().start,
                    format!(
                        "merchant `{}` needs `flows` (a directory) or `flow_files` (a list of files)",
                        m.id.as_str()
                    ),
                );
                None
            }
        }
    }

    fn number(&mut self, merchant: &str, n: &NumberTable) -> Option<Number> {
        let before = self.issues.len();
        let id = n.phone_number_id.as_str().to_owned();
        let id_at = n.phone_number_id.span().start;
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
            self.issue(
                id_at,
                format!(
                    "phone_number_id {} must be the digits WhatsApp shows for the number",
                    shown(&id)
                ),
            );
        } else if let Some((first, first_at)) = self.numbers.get(&id) {
            let message = format!(
                "phone number id `{id}` is also a number of merchant `{first}` ({})",
                (self.place)(*first_at)
            );
            self.issue(id_at, message);
        } else {
            self.numbers
                .insert(id.clone(), (merchant.to_owned(), id_at));
        }
        if let Some(business) = &n.business_number {
            let at = business.span().start;
            match crate::domain::PhoneNumber::parse(business.as_str()) {
                Err(why) => self.issue(
                    at,
                    format!(
                        "business_number {} is not an E.164 number with `+` such as +14155550100 ({why})",
                        shown(business.as_str())
                    ),
                ),
                Ok(_) => {
                    let key = business.as_str().trim().to_owned();
                    if let Some((first, first_at)) = self.business_numbers.get(&key) {
                        let message = format!(
                            "business number `{key}` is also declared for merchant `{first}` ({})",
                            (self.place)(*first_at)
                        );
                        self.issue(at, message);
                    } else {
                        self.business_numbers
                            .insert(key, (merchant.to_owned(), at));
                    }
                }
            }
        }
        let access_token = n
            .access_token_env
            .as_ref()
            .and_then(|name| self.secret(name, "access_token_env"));
        let sends_per_second = match &n.sends_per_second {
            Some(rate) if !(1..=MAX_SENDS_PER_SECOND).contains(rate.get()) => {
                self.issue(
                    rate.span().start,
                    format!("sends_per_second must be from 1 to {MAX_SENDS_PER_SECOND}"),
                );
                DEFAULT_SENDS_PER_SECOND
            }
            Some(rate) => *rate.get(),
            None => DEFAULT_SENDS_PER_SECOND,
        };
        if self.issues.len() > before {
            return None;
        }
        Some(Number {
            phone_number_id: id,
            business_number: n
                .business_number
                .as_ref()
                .map(|b| b.as_str().trim().to_owned()),
            access_token,
            sends_per_second,
        })
    }
}

fn valid_merchant_id(id: &str) -> bool {
    (1..=MAX_MERCHANT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A value quoted in an error when it is short enough to be what its key holds (a phone number
/// id, a business number); a longer one may be a secret pasted in the wrong place, so only its
/// length is given.
fn shown(value: &str) -> String {
    let len = value.chars().count();
    if len <= 20 {
        format!("`{value}`")
    } else {
        format!("(a value of {len} characters, not shown)")
    }
}

/// Whether `name` is written as environment variables usually are (upper-case letters, digits
/// and `_`, at most 64 characters), so that naming it in an error cannot show a secret.
fn conventional_env_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
