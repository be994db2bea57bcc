//! The OTP key and the keyed hash under which codes are stored.
//!
//! This module owns [`OtpKey`] (loading it from `WAOTP_OTP_KEY` or from a key file it creates
//! once in the data directory) and [`OtpDigest`], the only form in which a code is persisted for
//! checking. The digest is HMAC-SHA256 over an unambiguous encoding of everything the code is
//! bound to, so a code issued for one session, purpose or amount never verifies for another.
//! Digests are compared in constant time. Nothing here logs or prints key material.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::code::OtpCode;

/// Name of the generated key file inside the data directory.
pub const KEY_FILE_NAME: &str = "otp.key";

/// Shortest `WAOTP_OTP_KEY` accepted, in bytes: shorter secrets are guessable offline from a
/// stolen database, since the code space itself is tiny.
pub const MIN_KEY_BYTES: usize = 32;

// Versioned so the encoding can change without old digests verifying under new rules.
const DIGEST_DOMAIN: &[u8] = b"waotp/otp-digest/v1";

/// The secret key that OTP digests and sealed codes depend on.
pub struct OtpKey(SecretSlice<u8>);

/// Why the OTP key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("WAOTP_OTP_KEY must be at least {MIN_KEY_BYTES} bytes (e.g. 64 hex digits from `openssl rand -hex 32`)")]
    TooShort,
    #[error("OTP key file {path} is damaged: expected {} hex digits", MIN_KEY_BYTES * 2)]
    BadKeyFile { path: PathBuf },
    #[error("cannot read or create the OTP key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl OtpKey {
    /// Uses the configured key when given, otherwise the key file in `dir`, creating it (32
    /// random bytes, hex, mode 0600) on first start. A configured value of exactly 64 hex
    /// digits is decoded to 32 bytes; any other value of at least 32 bytes is used as is.
    pub fn load_or_create(dir: &Path, configured: Option<&SecretString>) -> Result<Self, KeyError> {
        if let Some(value) = configured {
            return Self::from_configured(value);
        }
        let path = dir.join(KEY_FILE_NAME);
        match fs::read_to_string(&path) {
            Ok(text) => Self::from_key_file(&path, text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key_file(dir, &path),
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// A key from the `WAOTP_OTP_KEY` value.
    pub fn from_configured(value: &SecretString) -> Result<Self, KeyError> {
        let text = value.expose_secret().trim();
        if text.len() == MIN_KEY_BYTES * 2 {
            if let Ok(bytes) = hex::decode(text) {
                return Ok(Self(bytes.into()));
            }
        }
        if text.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort);
        }
        Ok(Self(text.as_bytes().to_vec().into()))
    }

    /// A fresh random key, for tests and tools that need no persistence.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = vec![0u8; MIN_KEY_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(bytes.into())
    }

    fn from_key_file(path: &Path, mut text: String) -> Result<Self, KeyError> {
        let decoded = hex::decode(text.trim());
        text.zeroize();
        match decoded {
            Ok(bytes) if bytes.len() == MIN_KEY_BYTES => Ok(Self(bytes.into())),
            Ok(mut bytes) => {
                bytes.zeroize();
                Err(KeyError::BadKeyFile { path: path.into() })
            }
            Err(_) => Err(KeyError::BadKeyFile { path: path.into() }),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The keyed digest of `code` for `subject`.
    pub fn digest(&self, subject: &OtpSubject, code: &OtpCode) -> OtpDigest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(DIGEST_DOMAIN);
        put_field(&mut mac, subject.session_id.as_bytes());
        put_field(&mut mac, subject.purpose.as_bytes());
        put_field(&mut mac, code.expose().as_bytes());
        put_len(&mut mac, subject.bound.len());
        for (name, value) in &subject.bound {
            put_field(&mut mac, name.as_bytes());
            put_field(&mut mac, value.as_bytes());
        }
        OtpDigest(mac.finalize().into_bytes().into())
    }

    /// Whether `attempt` is the code `stored` was made from, for the same subject. The digest
    /// comparison is constant-time, so response timing reveals nothing about how close a guess
    /// came.
    pub fn verify(&self, subject: &OtpSubject, attempt: &OtpCode, stored: &OtpDigest) -> bool {
        self.digest(subject, attempt).ct_eq(stored)
    }
}

impl fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpKey(<redacted>)")
    }
}

// Every field is length-prefixed so that no two different field lists encode to the same
// bytes ("ab"+"c" vs "a"+"bc").
fn put_len(mac: &mut Hmac<Sha256>, len: usize) {
    mac.update(&(len as u64).to_be_bytes());
}

fn put_field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    put_len(mac, bytes.len());
    mac.update(bytes);
}

fn create_key_file(dir: &Path, path: &Path) -> Result<OtpKey, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.into(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_err)?;
    let key = OtpKey::generate(&mut rand::rngs::OsRng);
    let mut text = hex::encode(key.bytes());
    text.push('\n');
    // Written under a private temporary name, then hard-linked into place: the link fails if
    // another process created the key first, and nobody ever reads a half-written key.
    let tmp = dir.join(format!(".{KEY_FILE_NAME}.{}.tmp", std::process::id()));
    let written = write_private(&tmp, text.as_bytes());
    text.zeroize();
    written.map_err(io_err)?;
    let linked = fs::hard_link(&tmp, path);
    // Best effort: a stale temporary file holds the same key as the real one.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir).map_err(io_err)?;
            tracing::info!(path = %path.display(), "created a new OTP key file");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(path).map_err(io_err)?;
            OtpKey::from_key_file(path, text)
        }
        Err(e) => Err(io_err(e)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// What a code is bound to: the session, the purpose of the check and any further fields the
/// customer approved (for transactions: amount, currency, payee). Changing any of them makes
/// the code fail verification.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpSubject {
    session_id: String,
    purpose: String,
    // A sorted map gives one canonical order, whatever order the caller added fields in.
    bound: BTreeMap<String, String>,
}

impl OtpSubject {
    pub fn new(session_id: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            purpose: purpose.into(),
            bound: BTreeMap::new(),
        }
    }

    /// Binds a further field, e.g. `.bind("amount", "120.00")`.
    pub fn bind(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.bound.insert(name.into(), value.into());
        self
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn purpose(&self) -> &str {
        &self.purpose
    }
}

impl fmt::Debug for OtpSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bound values (amounts, payees) are customer data: names only.
        f.debug_struct("OtpSubject")
            .field("session_id", &self.session_id)
            .field("purpose", &self.purpose)
            .field("bound", &self.bound.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// HMAC-SHA256 of a code and its subject: what the ledger stores instead of the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpDigest(#[serde(with = "hex_bytes")] [u8; 32]);

impl OtpDigest {
    fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for OtpDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest plus a stolen key would let anyone test all codes offline; keep it out of logs.
        f.write_str("OtpDigest(<redacted>)")
    }
}

mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::code::normalize_attempt;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn key() -> OtpKey {
        OtpKey::generate(&mut StdRng::seed_from_u64(1))
    }

    fn code(digits: &str) -> OtpCode {
        normalize_attempt(digits).expect("valid code")
    }

    fn transaction() -> OtpSubject {
        OtpSubject::new("sess-1", "transaction_authorization")
            .bind("amount", "120.00")
            .bind("currency", "EUR")
            .bind("payee", "ACME Ltd")
    }

    #[test]
    fn correct_code_verifies() {
        let key = key();
        let stored = key.digest(&transaction(), &code("123456"));
        assert!(key.verify(&transaction(), &code("123456"), &stored));
        assert!(!key.verify(&transaction(), &code("123457"), &stored));
    }

    #[test]
    fn every_field_is_bound() {
        let key = key();
        let stored = key.digest(&transaction(), &code("123456"));
        let changed = [
            OtpSubject::new("sess-2", "transaction_authorization")
                .bind("amount", "120.00")
                .bind("currency", "EUR")
                .bind("payee", "ACME Ltd"),
            OtpSubject::new("sess-1", "signup")
                .bind("amount", "120.00")
                .bind("currency", "EUR")
                .bind("payee", "ACME Ltd"),
            transaction().bind("amount", "1200.00"),
            transaction().bind("currency", "USD"),
            transaction().bind("payee", "Mallory"),
            transaction().bind("extra", ""),
            OtpSubject::new("sess-1", "transaction_authorization")
                .bind("amount", "120.00")
                .bind("currency", "EUR"),
        ];
        for subject in &changed {
            assert!(
                !key.verify(subject, &code("123456"), &stored),
                "{subject:?}"
            );
        }
        let other_key = OtpKey::generate(&mut StdRng::seed_from_u64(2));
        assert!(!other_key.verify(&transaction(), &code("123456"), &stored));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let key = key();
        let a = key.digest(&OtpSubject::new("ab", "c"), &code("1234"));
        let b = key.digest(&OtpSubject::new("a", "bc"), &code("1234"));
        assert_ne!(a, b);
        let c = key.digest(&OtpSubject::new("s", "p").bind("ab", "c"), &code("1234"));
        let d = key.digest(&OtpSubject::new("s", "p").bind("a", "bc"), &code("1234"));
        assert_ne!(c, d);
    }

    #[test]
    fn bind_order_does_not_matter() {
        let key = key();
        let one = OtpSubject::new("s", "p").bind("a", "1").bind("b", "2");
        let two = OtpSubject::new("s", "p").bind("b", "2").bind("a", "1");
        assert_eq!(
            key.digest(&one, &code("1234")),
            key.digest(&two, &code("1234"))
        );
    }

    #[test]
    fn digest_comparison_is_subtle_constant_time() {
        // The comparison goes through `subtle::ConstantTimeEq`; check it agrees with equality on
        // digests that differ only in their last byte (the case an early-exit `==` leaks).
        let a = OtpDigest([7; 32]);
        let mut last = [7; 32];
        last[31] = 8;
        assert!(a.ct_eq(&OtpDigest([7; 32])));
        assert!(!a.ct_eq(&OtpDigest(last)));
        let choice: subtle::Choice = a.0.ct_eq(&last);
        assert_eq!(choice.unwrap_u8(), 0);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let key = OtpKey::from_configured(&SecretString::from("k".repeat(40))).expect("long");
        let stored = key.digest(&transaction(), &code("123456"));
        let shown = format!("{key:?} {stored:?} {:?}", transaction());
        assert!(!shown.contains("kkkk"));
        assert!(!shown.contains(&hex::encode(stored.0)));
        assert!(!shown.contains("ACME"));
    }

    #[test]
    fn configured_keys() {
        let hex_key = SecretString::from("ab".repeat(32));
        assert_eq!(
            OtpKey::from_configured(&hex_key).expect("hex").bytes(),
            [0xab; 32]
        );
        let raw = SecretString::from("x".repeat(32));
        assert_eq!(
            OtpKey::from_configured(&raw).expect("raw").bytes().len(),
            32
        );
        let short = SecretString::from("changeme".to_string());
        assert!(matches!(
            OtpKey::from_configured(&short),
            Err(KeyError::TooShort)
        ));
    }

    #[test]
    fn key_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = OtpKey::load_or_create(dir.path(), None).expect("create");
        let second = OtpKey::load_or_create(dir.path(), None).expect("load");
        assert_eq!(first.bytes(), second.bytes());
        let path = dir.path().join(KEY_FILE_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "only the key file remains");
        // A configured key wins over the file.
        let configured = SecretString::from("cd".repeat(32));
        let chosen = OtpKey::load_or_create(dir.path(), Some(&configured)).expect("configured");
        assert_eq!(chosen.bytes(), [0xcd; 32]);
    }

    #[test]
    fn damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(KEY_FILE_NAME), "not hex").expect("write");
        assert!(matches!(
            OtpKey::load_or_create(dir.path(), None),
            Err(KeyError::BadKeyFile { .. })
        ));
    }

    proptest! {
        #[test]
        fn only_the_issued_code_verifies(a in "[0-9]{6}", b in "[0-9]{6}", session in ".{0,20}") {
            let key = key();
            let subject = OtpSubject::new(session, "signup");
            let stored = key.digest(&subject, &code(&a));
            prop_assert_eq!(key.verify(&subject, &code(&b), &stored), a == b);
        }
    }
}
