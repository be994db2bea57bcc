//! The OTP key: where it comes from and how it is kept.
//!
//! This module owns [`OtpKey`]: taken from `WAOTP_OTP_KEY` when configured, otherwise read from
//! a key file in the data directory that it creates once (32 random bytes, hex, mode 0600). The
//! key is held in a `secrecy` box so neither `Debug` nor logs can print it; this module never
//! logs key material, only the key file's path.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::{CryptoRng, RngCore};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

/// Name of the generated key file inside the data directory.
pub const KEY_FILE_NAME: &str = "otp.key";

/// Shortest `WAOTP_OTP_KEY` accepted, in bytes: shorter secrets are guessable offline from a
/// stolen database, since the code space itself is tiny.
pub const MIN_KEY_BYTES: usize = 32;

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

    /// A key kept as raw bytes elsewhere (a database shared by several instances): exactly
    /// [`MIN_KEY_BYTES`] bytes, else [`KeyError::TooShort`].
    pub fn from_bytes(mut bytes: Vec<u8>) -> Result<Self, KeyError> {
        if bytes.len() != MIN_KEY_BYTES {
            bytes.zeroize();
            return Err(KeyError::TooShort);
        }
        Ok(Self(bytes.into()))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpKey(<redacted>)")
    }
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
    let tmp = dir.join(format!(
        ".{KEY_FILE_NAME}.{:016x}.tmp",
        rand::rngs::OsRng.next_u64()
    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_kept_as_bytes_are_exactly_32_bytes() {
        let key = OtpKey::generate(&mut rand::rngs::OsRng);
        let again = OtpKey::from_bytes(key.bytes().to_vec()).expect("32 bytes");
        assert_eq!(again.bytes(), key.bytes());
        for len in [0, 31, 33, 64] {
            assert!(OtpKey::from_bytes(vec![7; len]).is_err(), "{len} bytes");
        }
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
}
