//! Merchants and their WhatsApp business numbers: who a webhook, an API key or a session
//! belongs to.
//!
//! A deployment serves one or more merchants, each with one or more numbers. Without a tenants
//! file the environment describes one merchant, `default`, with one number
//! ([`Tenants::from_settings`]); a tenants file (`WAOTP_TENANTS`) declares several. Everything
//! stateful belongs to a [`Scope`] — a merchant and one of its numbers — so that the same
//! customer talking to two numbers has two independent conversations.
//!
//! The registry is read through a [`TenantsHandle`], which a reload swaps atomically: a request
//! sees one consistent registry from start to end.

pub mod file;
mod reload;

pub use reload::{load, watch};

use crate::config::Settings;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The merchant id of the single-merchant setup (environment variables, no tenants file).
pub const DEFAULT_MERCHANT: &str = "default";

/// The number id used when the single-merchant setup has no `WAOTP_PHONE_NUMBER_ID` (sandbox).
pub const SANDBOX_NUMBER: &str = "sandbox";

/// Separates the parts of a scoped store key. Never part of a merchant id, a phone number id
/// or a WhatsApp id.
pub const SCOPE_SEPARATOR: char = '\u{1f}';

/// A merchant and one of its numbers: what a session, its 24-hour window and its sends belong
/// to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The merchant's id.
    pub merchant: String,
    /// The number's WhatsApp `phone_number_id`.
    pub number: String,
}

impl Scope {
    pub fn new(merchant: impl Into<String>, number: impl Into<String>) -> Scope {
        Scope {
            merchant: merchant.into(),
            number: number.into(),
        }
    }

    /// The store key of `customer` talking to this scope's number: sessions, windows, pauses
    /// and replies are kept per (merchant, number, customer).
    pub fn customer_key(&self, customer: &str) -> String {
        format!(
            "{}{SCOPE_SEPARATOR}{}{SCOPE_SEPARATOR}{customer}",
            self.merchant, self.number
        )
    }

    /// The store key of `customer` at this scope's merchant, whatever the number: OTP limits
    /// are per (merchant, customer).
    pub fn merchant_customer_key(&self, customer: &str) -> String {
        format!("{}{SCOPE_SEPARATOR}{customer}", self.merchant)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.merchant, self.number)
    }
}

/// The SHA-256 digest of an API key: what a tenants file stores instead of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &[u8]) -> KeyDigest {
        KeyDigest(Sha256::digest(key).into())
    }

    /// Lower-case hex, as written in a tenants file (`sha256:<hex>`).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<KeyDigest> {
        let bytes = hex::decode(text).ok()?;
        Some(KeyDigest(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyDigest({}…)", &self.hex()[..8])
    }
}

/// One WhatsApp business number of a merchant.
#[derive(Debug, Clone)]
pub struct Number {
    /// WhatsApp's `phone_number_id`: what webhooks name and sends go from.
    pub phone_number_id: String,
    /// The number customers see, E.164 with `+` (for `wa.me` links).
    pub business_number: Option<String>,
    /// The Graph API token sending from this number. `None` runs the number in sandbox mode.
    pub access_token: Option<SecretString>,
    /// Messages per second this number may send (Meta's per-number throughput).
    pub sends_per_second: u32,
}

/// Where a merchant's flow files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowSource {
    /// Every `*.toml` file of a directory.
    Dir(PathBuf),
    /// Named files.
    Files(Vec<PathBuf>),
}

impl FlowSource {
    /// Reads and validates every flow of the source.
    pub fn load(&self) -> Result<crate::flow::FlowSet, crate::flow::LoadError> {
        match self {
            FlowSource::Dir(dir) => crate::flow::load_dir(dir),
            FlowSource::Files(files) => crate::flow::load_files(files),
        }
    }
}

/// The directory, or the files separated by commas, as an operator wrote them.
impl std::fmt::Display for FlowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowSource::Dir(dir) => write!(f, "{}", dir.display()),
            FlowSource::Files(files) => {
                for (i, file) in files.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", file.display())?;
                }
                Ok(())
            }
        }
    }
}

/// A merchant: its keys, its endpoints, its flows, its limits and its numbers.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    /// Digests of the merchant's API keys.
    pub api_keys: Vec<KeyDigest>,
    pub callback_url: Option<String>,
    pub callback_secret: Option<SecretString>,
    pub hook_base_url: Option<String>,
    pub flows: FlowSource,
    /// Codes sent per hour across the merchant's customers (the merchant's spend breaker);
    /// `None` takes the service-wide setting.
    pub otp_sends_per_hour: Option<u32>,
    /// Country prefixes codes may go to; `None` takes the service-wide setting.
    pub otp_allowed_prefixes: Option<Vec<String>>,
    /// The WhatsApp Business Account the merchant's templates belong to.
    pub waba_id: Option<String>,
    /// At least one; the first is where API starts send from unless they name another.
    pub numbers: Vec<Number>,
}

impl Number {
    /// A number in sandbox mode (no token) at Meta's default throughput, without a business
    /// number; the other fields are set as needed.
    pub fn new(phone_number_id: impl Into<String>) -> Number {
        Number {
            phone_number_id: phone_number_id.into(),
            business_number: None,
            access_token: None,
            sends_per_second: crate::config::DEFAULT_SENDS_PER_SECOND,
        }
    }
}

impl Merchant {
    /// A merchant serving `flows` from `numbers`, with no API key, URL, secret, limit override
    /// or Business Account; the other fields are set as needed.
    pub fn new(id: impl Into<String>, flows: FlowSource, numbers: Vec<Number>) -> Merchant {
        Merchant {
            id: id.into(),
            api_keys: Vec::new(),
            callback_url: None,
            callback_secret: None,
            hook_base_url: None,
            flows,
            otp_sends_per_hour: None,
            otp_allowed_prefixes: None,
            waba_id: None,
            numbers,
        }
    }

    /// The number with this `phone_number_id` or business number.
    pub fn number(&self, id_or_business_number: &str) -> Option<&Number> {
        self.numbers.iter().find(|n| {
            n.phone_number_id == id_or_business_number
                || n.business_number.as_deref() == Some(id_or_business_number)
        })
    }

    /// The number API starts send from by default.
    pub fn first_number(&self) -> &Number {
        &self.numbers[0]
    }

    /// The scope of one of this merchant's numbers.
    pub fn scope(&self, number: &Number) -> Scope {
        Scope::new(self.id.clone(), number.phone_number_id.clone())
    }

    /// Whether every number of the merchant runs in sandbox mode.
    pub fn sandbox(&self) -> bool {
        self.numbers.iter().all(|n| n.access_token.is_none())
    }
}

/// Every merchant of the deployment, with the lookups the routes need.
#[derive(Debug, Clone)]
pub struct Tenants {
    merchants: Vec<Arc<Merchant>>,
    /// phone_number_id → (merchant index, number index).
    by_number: HashMap<String, (usize, usize)>,
    by_key: HashMap<KeyDigest, usize>,
    /// Whether every event, whatever number it names, goes to the single merchant's one
    /// number: the single-merchant setup without `WAOTP_PHONE_NUMBER_ID` (sandbox).
    catch_all: bool,
    /// Whether a tenants file declared the merchants: their flows' URLs then name only their
    /// own settings, never the process environment (which holds every merchant's secrets).
    from_file: bool,
}

/// Why a set of merchants cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantsError {
    #[error("merchant `{0}` is declared twice")]
    DuplicateMerchant(String),
    #[error("merchant `{0}` has no number")]
    NoNumber(String),
    #[error("phone number id `{number}` belongs to both `{first}` and `{second}`")]
    DuplicateNumber {
        number: String,
        first: String,
        second: String,
    },
    #[error("an API key of `{second}` is also a key of `{first}`")]
    DuplicateKey { first: String, second: String },
}

impl Tenants {
    /// Builds the registry, refusing duplicate merchants, numbers and keys and merchants
    /// without numbers.
    pub fn new(merchants: Vec<Merchant>) -> Result<Tenants, TenantsError> {
        let mut by_number = HashMap::new();
        let mut by_key = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for (mi, m) in merchants.iter().enumerate() {
            if !ids.insert(m.id.as_str()) {
                return Err(TenantsError::DuplicateMerchant(m.id.clone()));
            }
            if m.numbers.is_empty() {
                return Err(TenantsError::NoNumber(m.id.clone()));
            }
            for (ni, n) in m.numbers.iter().enumerate() {
                if let Some((first, _)) = by_number.insert(n.phone_number_id.clone(), (mi, ni)) {
                    return Err(TenantsError::DuplicateNumber {
                        number: n.phone_number_id.clone(),
                        first: merchants[first].id.clone(),
                        second: m.id.clone(),
                    });
                }
            }
            for k in &m.api_keys {
                if let Some(first) = by_key.insert(*k, mi) {
                    return Err(TenantsError::DuplicateKey {
                        first: merchants[first].id.clone(),
                        second: m.id.clone(),
                    });
                }
            }
        }
        Ok(Tenants {
            merchants: merchants.into_iter().map(Arc::new).collect(),
            by_number,
            by_key,
            catch_all: false,
            from_file: false,
        })
    }

    /// The single-merchant setup of the environment variables: merchant `default` with one
    /// number. `api_keys` are the merchant's keys (the settings' keys, or the generated sandbox
    /// key).
    pub fn from_settings(settings: &Settings, api_keys: &[SecretString]) -> Tenants {
        let number = Number {
            phone_number_id: settings
                .phone_number_id
                .clone()
                .unwrap_or_else(|| SANDBOX_NUMBER.to_owned()),
            business_number: settings.business_number.clone(),
            access_token: settings.access_token.clone(),
            sends_per_second: settings.sends_per_second,
        };
        let merchant = Merchant {
            id: DEFAULT_MERCHANT.to_owned(),
            api_keys: api_keys
                .iter()
                .map(|k| KeyDigest::of(k.expose_secret().as_bytes()))
                .collect(),
            callback_url: settings.callback_url.clone(),
            callback_secret: settings.callback_secret.clone(),
            hook_base_url: settings.hook_base_url.clone(),
            flows: FlowSource::Dir(settings.flows_dir.clone()),
            otp_sends_per_hour: None,
            otp_allowed_prefixes: None,
            waba_id: settings.waba_id.clone(),
            numbers: vec![number],
        };
        let mut tenants = Tenants::new(vec![merchant]).expect("one merchant with one number");
        tenants.catch_all = settings.phone_number_id.is_none();
        tenants
    }

    /// Every merchant, in declaration order.
    pub fn merchants(&self) -> &[Arc<Merchant>] {
        &self.merchants
    }

    /// The merchant with this id.
    pub fn merchant(&self, id: &str) -> Option<&Arc<Merchant>> {
        self.merchants.iter().find(|m| m.id == id)
    }

    /// The merchant and number a webhook naming `phone_number_id` is for; `None` for a number
    /// the deployment does not serve (the event is acknowledged and ignored).
    pub fn number(&self, phone_number_id: Option<&str>) -> Option<(&Arc<Merchant>, &Number)> {
        if self.catch_all {
            let m = &self.merchants[0];
            return Some((m, m.first_number()));
        }
        let (mi, ni) = self.by_number.get(phone_number_id?)?;
        let m = &self.merchants[*mi];
        Some((m, &m.numbers[*ni]))
    }

    /// The scope of a webhook naming `phone_number_id`, if the deployment serves it.
    pub fn scope_of(&self, phone_number_id: Option<&str>) -> Option<Scope> {
        self.number(phone_number_id).map(|(m, n)| m.scope(n))
    }

    /// The merchant and number of a scope, if both are still configured.
    pub fn resolve(&self, scope: &Scope) -> Option<(&Arc<Merchant>, &Number)> {
        let m = self.merchant(&scope.merchant)?;
        let n = m
            .numbers
            .iter()
            .find(|n| n.phone_number_id == scope.number)?;
        Some((m, n))
    }

    /// The merchant an API key belongs to. The digest is looked up, so the time taken says
    /// nothing about how close a wrong key was.
    pub fn merchant_for_key(&self, key: &[u8]) -> Option<&Arc<Merchant>> {
        self.merchant_for_digest(&KeyDigest::of(key))
    }

    /// The registry, as declared by a tenants file.
    pub fn declared_in_file(mut self) -> Tenants {
        self.from_file = true;
        self
    }

    /// Whether a tenants file declared the merchants (see [`Tenants::declared_in_file`]).
    pub fn is_declared_in_file(&self) -> bool {
        self.from_file
    }

    /// The merchant whose API key has this digest.
    pub fn merchant_for_digest(&self, digest: &KeyDigest) -> Option<&Arc<Merchant>> {
        let i = self.by_key.get(digest)?;
        Some(&self.merchants[*i])
    }

    /// The scope of the single-merchant setup (and of records written before scopes existed).
    pub fn default_scope(&self) -> Scope {
        let m = self
            .merchant(DEFAULT_MERCHANT)
            .unwrap_or(&self.merchants[0]);
        m.scope(m.first_number())
    }

    /// Whether every merchant runs in sandbox mode.
    pub fn sandbox(&self) -> bool {
        self.merchants.iter().all(|m| m.sandbox())
    }
}

/// The current registry, swapped whole by a reload.
#[derive(Debug, Clone)]
pub struct TenantsHandle(Arc<RwLock<Arc<Tenants>>>);

impl TenantsHandle {
    pub fn new(tenants: Tenants) -> TenantsHandle {
        TenantsHandle(Arc::new(RwLock::new(Arc::new(tenants))))
    }

    /// The registry as it is now; hold it for the whole of one request.
    pub fn current(&self) -> Arc<Tenants> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the registry (a reload of the tenants file).
    pub fn replace(&self, tenants: Tenants) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tenants);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(id: &str) -> Number {
        Number {
            business_number: Some(format!("+1555{id}")),
            ..Number::new(id)
        }
    }

    fn merchant(id: &str, numbers: &[&str], key: &str) -> Merchant {
        Merchant {
            api_keys: vec![KeyDigest::of(key.as_bytes())],
            ..Merchant::new(
                id,
                FlowSource::Dir("flows".into()),
                numbers.iter().map(|n| number(n)).collect(),
            )
        }
    }

    #[test]
    fn routes_numbers_and_keys_to_their_merchant() {
        let t = Tenants::new(vec![
            merchant("a", &["1", "2"], "ka"),
            merchant("b", &["3"], "kb"),
        ])
        .expect("tenants");
        assert_eq!(t.scope_of(Some("2")), Some(Scope::new("a", "2")));
        assert_eq!(t.scope_of(Some("3")), Some(Scope::new("b", "3")));
        assert_eq!(t.scope_of(Some("4")), None);
        assert_eq!(t.scope_of(None), None);
        assert_eq!(t.merchant_for_key(b"kb").expect("b").id, "b");
        assert!(t.merchant_for_key(b"kc").is_none());
        assert_eq!(
            t.merchant("a")
                .and_then(|m| m.number("+15552"))
                .expect("number")
                .phone_number_id,
            "2"
        );
    }

    #[test]
    fn refuses_a_number_or_key_of_two_merchants() {
        let e = Tenants::new(vec![
            merchant("a", &["1"], "k1"),
            merchant("b", &["1"], "k2"),
        ]);
        assert!(matches!(e, Err(TenantsError::DuplicateNumber { .. })));
        let e = Tenants::new(vec![merchant("a", &["1"], "k"), merchant("b", &["2"], "k")]);
        assert!(matches!(e, Err(TenantsError::DuplicateKey { .. })));
        let e = Tenants::new(vec![merchant("a", &[], "k")]);
        assert_eq!(
            e.expect_err("no number"),
            TenantsError::NoNumber("a".into())
        );
    }

    #[test]
    fn scoped_keys_keep_customers_apart() {
        let a1 = Scope::new("a", "1");
        let a2 = Scope::new("a", "2");
        assert_ne!(a1.customer_key("91"), a2.customer_key("91"));
        assert_eq!(
            a1.merchant_customer_key("91"),
            a2.merchant_customer_key("91")
        );
    }
}
