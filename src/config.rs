//! Settings: the `WAOTP_*` environment variables, optionally backed by a TOML file. Every setting
//! is documented in docs/configuration.md (`tests/docs.rs` checks that the two agree).
//!
//! Owns parsing and checking the configuration, nothing else. Secrets are held as
//! `SecretString`, whose `Debug` prints a placeholder, so no log line can carry them. A missing
//! or invalid setting becomes a [`ConfigError`] that names the variable; the CLI maps it to
//! exit code 2.

use crate::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_FLOWS_DIR: &str = "./flows";
pub const DEFAULT_LOG: &str = "info";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com/v23.0";
/// Default retention of finished sessions, in days.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;
/// Default service-wide ceiling on codes sent per hour.
pub const DEFAULT_OTP_SENDS_PER_HOUR: u32 = crate::otp::policy::DEFAULT_GLOBAL_SENDS_PER_HOUR;
/// Allowed sizes of the unverified-body budget, in MiB: at least one largest body (3 MiB).
pub const WEBHOOK_BUFFER_MIB_RANGE: std::ops::RangeInclusive<usize> = 3..=4096;
/// Meta's default throughput for a business number …
pub const DEFAULT_SENDS_PER_SECOND: u32 = 80;
/// … and the most it is ever upgraded to.
pub const MAX_SENDS_PER_SECOND: u32 = 1000;
/// How long a send in doubt waits for a status webhook before it is sent once more …
pub const DEFAULT_IN_DOUBT_SECONDS: u64 = 120;
/// … at most an hour, and against Meta's own Graph API at least 30 seconds: a shorter wait
/// would resend messages whose status is only a little late. (Local fakes of the API may use
/// down to 1 second.)
pub const MAX_IN_DOUBT_SECONDS: u64 = 3600;
pub const MIN_IN_DOUBT_SECONDS_AT_META: u64 = 30;
/// Merchant API requests per second allowed to each key once its burst is spent (Stripe's
/// figure for live mode) …
pub const DEFAULT_API_RATE: u32 = 100;
/// … and how many a key may make at once: two seconds' worth.
pub const DEFAULT_API_BURST: u32 = 200;
/// Allowed values of both.
pub const API_RATE_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
/// At SIGTERM/SIGINT, the longest wait for in-flight requests and sends before exiting …
pub const DEFAULT_DRAIN_SECONDS: u64 = 10;
/// … from 1 second to 5 minutes (systemd's default stop timeout is 90 s).
pub const DRAIN_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=300;

/// One `WAOTP_*` setting as `waotp serve --help` shows it: the help is generated from this
/// table, and a test holds it to every name this module reads and to the defaults it applies.
#[derive(Debug, Clone)]
pub struct SettingDoc {
    pub name: &'static str,
    /// The value used when the setting is unset; `None` when unset means "not used".
    pub default: Option<String>,
    pub meaning: &'static str,
}

/// Every setting, in the order an operator reads them.
pub fn documented() -> Vec<SettingDoc> {
    let s = |name, default: Option<String>, meaning| SettingDoc {
        name,
        default,
        meaning,
    };
    let n = |v: &dyn std::fmt::Display| Some(v.to_string());
    vec![
        s("WAOTP_CONFIG", None, "TOML file setting the same keys in lower case without the prefix; the environment wins"),
        s("WAOTP_LISTEN", n(&DEFAULT_LISTEN), "address to bind; port 0 picks a free port (the bound address is logged)"),
        s("WAOTP_DATA_DIR", n(&DEFAULT_DATA_DIR), "data directory: the embedded database, the inbound journal and the generated OTP key"),
        s("WAOTP_DATABASE_URL", None, "postgres:// or postgresql:// URL of the PostgreSQL engine, which several instances may share; unset: the embedded engine (sled) in WAOTP_DATA_DIR"),
        s("WAOTP_FLOWS_DIR", n(&DEFAULT_FLOWS_DIR), "flow files"),
        s("WAOTP_TENANTS", None, "tenants file declaring several merchants and their numbers (docs/tenants.md); the variables it replaces (WAOTP_ACCESS_TOKEN, WAOTP_PHONE_NUMBER_ID, WAOTP_API_KEYS, …) must then be unset"),
        s("WAOTP_VERIFY_TOKEN", None, "token for the webhook GET handshake (required outside sandbox mode)"),
        s("WAOTP_APP_SECRET", None, "Meta App Secret, key of X-Hub-Signature-256; unset refuses every webhook POST (required outside sandbox mode)"),
        s("WAOTP_ACCESS_TOKEN", None, "Graph API token; unset means sandbox mode: nothing is sent to WhatsApp"),
        s("WAOTP_PHONE_NUMBER_ID", None, "business phone number id: the send URL and the only number whose events are acted on (required outside sandbox mode)"),
        s("WAOTP_BUSINESS_NUMBER", None, "the business's own E.164 number, for reverse-OTP wa.me links"),
        s("WAOTP_GRAPH_URL", n(&DEFAULT_GRAPH_URL), "Graph API base URL"),
        s("WAOTP_WABA_ID", None, "WhatsApp Business Account id: its message templates are checked at start and by `waotp templates`"),
        s("WAOTP_REQUIRE_APPROVED_TEMPLATES", n(&false), "true: refuse to start (exit 2) while a flow's template is not approved (needs WAOTP_WABA_ID)"),
        s("WAOTP_API_KEYS", None, "comma-separated merchant API keys (required outside sandbox mode; the sandbox generates one)"),
        s("WAOTP_CALLBACK_URL", None, "default merchant callback URL"),
        s("WAOTP_CALLBACK_SECRET", None, "key of X-Waotp-Signature on callbacks and hooks (required outside sandbox mode)"),
        s("WAOTP_HOOK_BASE_URL", None, "base URL of the bundled flows' hooks; flows naming {WAOTP_HOOK_BASE_URL} need it outside sandbox mode"),
        s("WAOTP_OTP_KEY", None, "key for hashing OTPs at rest (at least 32 characters); unset: generated in the data directory"),
        s("WAOTP_OTP_SENDS_PER_HOUR", n(&DEFAULT_OTP_SENDS_PER_HOUR), "service-wide ceiling on codes sent per clock hour, 1 to 1000000"),
        s("WAOTP_SENDS_PER_SECOND", n(&DEFAULT_SENDS_PER_SECOND), "messages per second sent to the Graph API, 1 to 1000"),
        s("WAOTP_OTP_ALLOWED_PREFIXES", None, "comma-separated number prefixes that may receive codes, e.g. +91,+971; unset allows all"),
        s("WAOTP_IN_DOUBT_SECONDS", n(&DEFAULT_IN_DOUBT_SECONDS), "wait for a status webhook before a send whose answer never came is sent once more, 1 to 3600 (at least 30 against Meta)"),
        s("WAOTP_API_RATE", n(&DEFAULT_API_RATE), "merchant API requests per second per API key once its burst is spent, 1 to 1000000; beyond: 429 with Retry-After"),
        s("WAOTP_API_BURST", n(&DEFAULT_API_BURST), "merchant API requests an API key may make at once before WAOTP_API_RATE applies, 1 to 1000000"),
        s("WAOTP_DRAIN_SECONDS", n(&DEFAULT_DRAIN_SECONDS), "on SIGTERM/SIGINT, the longest wait for in-flight requests and sends before the store is flushed and the process exits, 1 to 300"),
        s("WAOTP_RETENTION_DAYS", n(&DEFAULT_RETENTION_DAYS), "days finished sessions and their records are kept, 1 to 3650"),
        s("WAOTP_WEBHOOK_BUFFER_MIB", n(&(crate::webhook::intake::DEFAULT_BUDGET_BYTES / (1024 * 1024))), "MiB that webhook bodies not yet verified may hold at once, 3 to 4096"),
        s("WAOTP_LOG", n(&DEFAULT_LOG), "tracing filter, e.g. waotp=debug,info; an invalid one stops start-up"),
        s("WAOTP_LOG_FORMAT", n(&"pretty"), "pretty or json"),
    ]
}

/// The settings part of `waotp serve --help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "Settings (environment variables; a TOML file named by WAOTP_CONFIG may set the same \
         keys in lower case without the prefix, and the environment wins):\n",
    );
    for doc in documented() {
        let default = doc.default.as_deref().unwrap_or("unset");
        out.push_str(&format!(
            "  {:<27} [default: {default}]\n      {}\n",
            doc.name, doc.meaning
        ));
    }
    out
}

/// The single-merchant settings a tenants file replaces: setting one of them as well as
/// `WAOTP_TENANTS` is a configuration error, so no operator wonders which one wins.
pub const REPLACED_BY_TENANTS: [&str; 9] = [
    "WAOTP_ACCESS_TOKEN",
    "WAOTP_PHONE_NUMBER_ID",
    "WAOTP_BUSINESS_NUMBER",
    "WAOTP_API_KEYS",
    "WAOTP_CALLBACK_URL",
    "WAOTP_CALLBACK_SECRET",
    "WAOTP_HOOK_BASE_URL",
    "WAOTP_WABA_ID",
    "WAOTP_SENDS_PER_SECOND",
];

/// Everything the server needs to know, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL engine's database (`WAOTP_DATABASE_URL`); `None` keeps everything in the
    /// embedded engine under `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    pub flows_dir: PathBuf,
    /// The tenants file (`WAOTP_TENANTS`): merchants and numbers come from it instead of the
    /// single-merchant settings, which are then unset (see `crate::tenants::load`).
    pub tenants: Option<PathBuf>,
    /// Whether the tenants file gives some number an access token (`access_token_env`), i.e.
    /// whether the deployment sends to WhatsApp. Read once at start; see [`Settings::sandbox`].
    pub tenants_send: bool,
    pub verify_token: Option<SecretString>,
    pub app_secret: Option<SecretString>,
    /// `None` means sandbox mode (see docs/configuration.md).
    pub access_token: Option<SecretString>,
    pub phone_number_id: Option<String>,
    pub business_number: Option<String>,
    pub graph_url: String,
    /// The WhatsApp Business Account whose templates are checked at start.
    pub waba_id: Option<String>,
    /// Refuse to start while a flow's template is not approved (instead of warning).
    pub require_approved_templates: bool,
    pub api_keys: Vec<SecretString>,
    pub callback_url: Option<String>,
    pub callback_secret: Option<SecretString>,
    pub hook_base_url: Option<String>,
    pub otp_key: Option<SecretString>,
    pub log: String,
    pub log_format: LogFormat,
    /// Codes the whole service may send per clock hour (a spend breaker against pumping).
    pub otp_sends_per_hour: u32,
    /// Messages per second the business number may send (Meta: 80 by default, up to 1,000
    /// once upgraded; inbound messages count against the same budget).
    pub sends_per_second: u32,
    /// Phone number prefixes that may receive codes (`+91`, `+4420`); empty allows all.
    pub otp_allowed_prefixes: Vec<String>,
    /// How long finished sessions and their records are kept.
    pub retention: std::time::Duration,
    /// Bytes that webhook bodies not yet verified may hold at once, across all connections.
    pub webhook_buffer_bytes: usize,
    /// How long a send whose answer never came waits for a status before it is sent once more.
    pub in_doubt_wait: std::time::Duration,
    /// Merchant API requests per second per key, once its burst is spent.
    pub api_rate: u32,
    /// Merchant API requests a key may make at once.
    pub api_burst: u32,
    /// At SIGTERM/SIGINT, the longest wait for in-flight requests and sends.
    pub drain: std::time::Duration,
}

/// A configuration problem, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required setting{}: {}", if .0.len() > 1 { "s" } else { "" }, .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("invalid {name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot read config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("WAOTP_TENANTS declares the merchants and their numbers; unset {}", .0.join(", "))]
    ReplacedByTenants(Vec<&'static str>),
}

/// The optional TOML file: the same settings as the environment, lower-case without the prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    flows_dir: Option<String>,
    tenants: Option<String>,
    verify_token: Option<String>,
    app_secret: Option<String>,
    access_token: Option<String>,
    phone_number_id: Option<String>,
    business_number: Option<String>,
    graph_url: Option<String>,
    waba_id: Option<String>,
    require_approved_templates: Option<bool>,
    api_keys: Option<StringOrList>,
    callback_url: Option<String>,
    callback_secret: Option<String>,
    hook_base_url: Option<String>,
    otp_key: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    otp_sends_per_hour: Option<u32>,
    sends_per_second: Option<u32>,
    otp_allowed_prefixes: Option<StringOrList>,
    retention_days: Option<u32>,
    webhook_buffer_mib: Option<u32>,
    in_doubt_seconds: Option<u64>,
    api_rate: Option<u32>,
    api_burst: Option<u32>,
    drain_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    /// The comma-separated form the environment uses.
    fn joined(self) -> String {
        match self {
            StringOrList::One(s) => s,
            StringOrList::Many(v) => v.join(","),
        }
    }
}

impl FileSettings {
    /// Flattens the file into the same `WAOTP_*` keys as the environment.
    fn into_pairs(self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                out.insert(format!("WAOTP_{key}"), v);
            }
        };
        put("LISTEN", self.listen);
        put("DATA_DIR", self.data_dir);
        put("DATABASE_URL", self.database_url);
        put("FLOWS_DIR", self.flows_dir);
        put("TENANTS", self.tenants);
        put("VERIFY_TOKEN", self.verify_token);
        put("APP_SECRET", self.app_secret);
        put("ACCESS_TOKEN", self.access_token);
        put("PHONE_NUMBER_ID", self.phone_number_id);
        put("BUSINESS_NUMBER", self.business_number);
        put("GRAPH_URL", self.graph_url);
        put("WABA_ID", self.waba_id);
        put(
            "REQUIRE_APPROVED_TEMPLATES",
            self.require_approved_templates.map(|b| b.to_string()),
        );
        put("API_KEYS", self.api_keys.map(StringOrList::joined));
        put("CALLBACK_URL", self.callback_url);
        put("CALLBACK_SECRET", self.callback_secret);
        put("HOOK_BASE_URL", self.hook_base_url);
        put("OTP_KEY", self.otp_key);
        put("LOG", self.log);
        put("LOG_FORMAT", self.log_format);
        put(
            "OTP_SENDS_PER_HOUR",
            self.otp_sends_per_hour.map(|n| n.to_string()),
        );
        put("RETENTION_DAYS", self.retention_days.map(|n| n.to_string()));
        put(
            "IN_DOUBT_SECONDS",
            self.in_doubt_seconds.map(|n| n.to_string()),
        );
        put(
            "SENDS_PER_SECOND",
            self.sends_per_second.map(|n| n.to_string()),
        );
        put(
            "WEBHOOK_BUFFER_MIB",
            self.webhook_buffer_mib.map(|n| n.to_string()),
        );
        put("API_RATE", self.api_rate.map(|n| n.to_string()));
        put("API_BURST", self.api_burst.map(|n| n.to_string()));
        put("DRAIN_SECONDS", self.drain_seconds.map(|n| n.to_string()));
        put(
            "OTP_ALLOWED_PREFIXES",
            self.otp_allowed_prefixes.map(StringOrList::joined),
        );
        out
    }
}

impl Settings {
    /// Reads the process environment (and the file named by `WAOTP_CONFIG`, if any).
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_vars(std::env::vars().collect())
    }

    /// Resolves settings from a variable map; the file named by `WAOTP_CONFIG` fills in what the
    /// map leaves unset.
    pub fn from_vars(mut vars: HashMap<String, String>) -> Result<Settings, ConfigError> {
        if let Some(path) = vars.get("WAOTP_CONFIG").filter(|p| !p.is_empty()).cloned() {
            for (k, v) in read_file(Path::new(&path))? {
                vars.entry(k).or_insert(v);
            }
        }
        let get = |key: &str| {
            vars.get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret = |key: &str| get(key).map(SecretString::from);
        let tenants = get("WAOTP_TENANTS").map(PathBuf::from);
        if tenants.is_some() {
            let replaced: Vec<&'static str> = REPLACED_BY_TENANTS
                .into_iter()
                .filter(|name| get(name).is_some())
                .collect();
            if !replaced.is_empty() {
                return Err(ConfigError::ReplacedByTenants(replaced));
            }
        }
        let per_second =
            |name: &'static str, default: u32| match get(name) {
                Some(n) => n.parse().ok().filter(|n| API_RATE_RANGE.contains(n)).ok_or(
                    ConfigError::Invalid {
                        name,
                        message: format!(
                            "`{n}` is not a whole number from {} to {}",
                            API_RATE_RANGE.start(),
                            API_RATE_RANGE.end()
                        ),
                    },
                ),
                None => Ok(default),
            };

        let settings = Settings {
            listen: get("WAOTP_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
            data_dir: get("WAOTP_DATA_DIR")
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
                .into(),
            database_url: get("WAOTP_DATABASE_URL")
                .map(|url| DatabaseUrl::parse(&url))
                .transpose()?,
            flows_dir: get("WAOTP_FLOWS_DIR")
                .unwrap_or_else(|| DEFAULT_FLOWS_DIR.into())
                .into(),
            tenants_send: tenants.as_deref().is_some_and(tenants_name_a_token),
            tenants,
            verify_token: secret("WAOTP_VERIFY_TOKEN"),
            app_secret: secret("WAOTP_APP_SECRET"),
            access_token: secret("WAOTP_ACCESS_TOKEN"),
            phone_number_id: get("WAOTP_PHONE_NUMBER_ID"),
            business_number: get("WAOTP_BUSINESS_NUMBER"),
            graph_url: get("WAOTP_GRAPH_URL").unwrap_or_else(|| DEFAULT_GRAPH_URL.into()),
            waba_id: get("WAOTP_WABA_ID"),
            require_approved_templates: match get("WAOTP_REQUIRE_APPROVED_TEMPLATES").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "WAOTP_REQUIRE_APPROVED_TEMPLATES",
                        message: format!("`{other}` is not true or false"),
                    })
                }
            },
            api_keys: get("WAOTP_API_KEYS")
                .map(|keys| {
                    keys.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(|k| SecretString::from(k.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            callback_url: get("WAOTP_CALLBACK_URL"),
            callback_secret: secret("WAOTP_CALLBACK_SECRET"),
            hook_base_url: get("WAOTP_HOOK_BASE_URL"),
            otp_key: secret("WAOTP_OTP_KEY"),
            log: match get("WAOTP_LOG") {
                Some(filter) => {
                    crate::telemetry::check_filter(&filter).map_err(|message| {
                        ConfigError::Invalid {
                            name: "WAOTP_LOG",
                            message,
                        }
                    })?;
                    filter
                }
                None => DEFAULT_LOG.into(),
            },
            log_format: match get("WAOTP_LOG_FORMAT") {
                Some(f) => f.parse().map_err(|message| ConfigError::Invalid {
                    name: "WAOTP_LOG_FORMAT",
                    message,
                })?,
                None => LogFormat::Pretty,
            },
            otp_sends_per_hour: match get("WAOTP_OTP_SENDS_PER_HOUR") {
                Some(n) => n
                    .parse()
                    .ok()
                    .filter(|n| crate::otp::policy::GLOBAL_CEILING_RANGE.contains(n))
                    .ok_or(ConfigError::Invalid {
                        name: "WAOTP_OTP_SENDS_PER_HOUR",
                        message: format!(
                            "`{n}` is not a whole number from {} to {}",
                            crate::otp::policy::GLOBAL_CEILING_RANGE.start(),
                            crate::otp::policy::GLOBAL_CEILING_RANGE.end()
                        ),
                    })?,
                None => DEFAULT_OTP_SENDS_PER_HOUR,
            },
            sends_per_second: match get("WAOTP_SENDS_PER_SECOND") {
                Some(n) => n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_SENDS_PER_SECOND).contains(n))
                    .ok_or(ConfigError::Invalid {
                        name: "WAOTP_SENDS_PER_SECOND",
                        message: format!(
                            "`{n}` is not a whole number from 1 to {MAX_SENDS_PER_SECOND}"
                        ),
                    })?,
                None => DEFAULT_SENDS_PER_SECOND,
            },
            otp_allowed_prefixes: get("WAOTP_OTP_ALLOWED_PREFIXES")
                .map(|p| {
                    p.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            retention: match get("WAOTP_RETENTION_DAYS") {
                Some(n) => n
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=3650).contains(n))
                    .map(|d| std::time::Duration::from_secs(d * 86_400))
                    .ok_or(ConfigError::Invalid {
                        name: "WAOTP_RETENTION_DAYS",
                        message: format!("`{n}` is not a number of days from 1 to 3650"),
                    })?,
                None => std::time::Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400),
            },
            webhook_buffer_bytes: match get("WAOTP_WEBHOOK_BUFFER_MIB") {
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| WEBHOOK_BUFFER_MIB_RANGE.contains(n))
                    .map(|mib| mib * 1024 * 1024)
                    .ok_or(ConfigError::Invalid {
                        name: "WAOTP_WEBHOOK_BUFFER_MIB",
                        message: format!(
                            "`{n}` is not a number of MiB from {} to {}",
                            WEBHOOK_BUFFER_MIB_RANGE.start(),
                            WEBHOOK_BUFFER_MIB_RANGE.end()
                        ),
                    })?,
                None => crate::webhook::intake::DEFAULT_BUDGET_BYTES,
            },
            in_doubt_wait: match get("WAOTP_IN_DOUBT_SECONDS") {
                Some(n) => n
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_IN_DOUBT_SECONDS).contains(n))
                    .map(std::time::Duration::from_secs)
                    .ok_or(ConfigError::Invalid {
                        name: "WAOTP_IN_DOUBT_SECONDS",
                        message: format!(
                            "`{n}` is not a number of seconds from 1 to {MAX_IN_DOUBT_SECONDS}"
                        ),
                    })?,
                None => std::time::Duration::from_secs(DEFAULT_IN_DOUBT_SECONDS),
            },
            api_rate: per_second("WAOTP_API_RATE", DEFAULT_API_RATE)?,
            api_burst: per_second("WAOTP_API_BURST", DEFAULT_API_BURST)?,
            drain: match get("WAOTP_DRAIN_SECONDS") {
                Some(n) => n
                    .parse::<u64>()
                    .ok()
                    .filter(|n| DRAIN_SECONDS_RANGE.contains(n))
                    .map(std::time::Duration::from_secs)
                    .ok_or(ConfigError::Invalid {
                        name: "WAOTP_DRAIN_SECONDS",
                        message: format!(
                            "`{n}` is not a number of seconds from {} to {}",
                            DRAIN_SECONDS_RANGE.start(),
                            DRAIN_SECONDS_RANGE.end()
                        ),
                    })?,
                None => std::time::Duration::from_secs(DEFAULT_DRAIN_SECONDS),
            },
        };
        settings.check()?;
        Ok(settings)
    }

    /// Sandbox mode: no access token, so nothing is sent to WhatsApp (see docs/configuration.md).
    /// With a tenants file: no number of the file names an access token.
    pub fn sandbox(&self) -> bool {
        self.access_token.is_none() && !self.tenants_send
    }

    fn check(&self) -> Result<(), ConfigError> {
        use std::net::ToSocketAddrs;
        if self.listen.to_socket_addrs().is_err() {
            return Err(ConfigError::Invalid {
                name: "WAOTP_LISTEN",
                message: format!("`{}` is not a host:port address", self.listen),
            });
        }
        for (name, url) in [
            ("WAOTP_GRAPH_URL", Some(&self.graph_url)),
            ("WAOTP_CALLBACK_URL", self.callback_url.as_ref()),
            ("WAOTP_HOOK_BASE_URL", self.hook_base_url.as_ref()),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        name,
                        message: format!("`{url}` is not an http(s) URL"),
                    });
                }
            }
        }
        if self.in_doubt_wait.as_secs() < MIN_IN_DOUBT_SECONDS_AT_META
            && !self.sandbox()
            && is_meta_graph_url(&self.graph_url)
        {
            return Err(ConfigError::Invalid {
                name: "WAOTP_IN_DOUBT_SECONDS",
                message: format!(
                    "at least {MIN_IN_DOUBT_SECONDS_AT_META} seconds against Meta's Graph API"
                ),
            });
        }
        if let Some(number) = &self.business_number {
            // The `+` is optional here: operators often paste the bare digits of a wa.me link.
            if let Err(why) = crate::domain::PhoneNumber::from_wa_id(number) {
                return Err(ConfigError::Invalid {
                    name: "WAOTP_BUSINESS_NUMBER",
                    message: format!("expected an E.164 number such as +14155550100 ({why})"),
                });
            }
        }
        if let Some(id) = &self.waba_id {
            if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError::Invalid {
                    name: "WAOTP_WABA_ID",
                    message: "must be letters and digits only".into(),
                });
            }
        }
        for prefix in &self.otp_allowed_prefixes {
            if crate::otp::policy::prefix_digits(prefix).is_none() {
                return Err(ConfigError::Invalid {
                    name: "WAOTP_OTP_ALLOWED_PREFIXES",
                    message: format!("`{prefix}` is not a phone number prefix such as +91"),
                });
            }
        }
        if let Some(key) = &self.otp_key {
            if key.expose_secret().len() < 32 {
                return Err(ConfigError::Invalid {
                    name: "WAOTP_OTP_KEY",
                    message: "must be at least 32 characters".into(),
                });
            }
        }
        if self.sandbox() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.verify_token.is_none() {
            missing.push("WAOTP_VERIFY_TOKEN");
        }
        if self.app_secret.is_none() {
            missing.push("WAOTP_APP_SECRET");
        }
        // With a tenants file, each merchant's number, keys, secret and account are checked
        // where they are declared (`crate::tenants::file`).
        if self.tenants.is_none() {
            if self.phone_number_id.is_none() {
                missing.push("WAOTP_PHONE_NUMBER_ID");
            }
            if self.api_keys.is_empty() {
                missing.push("WAOTP_API_KEYS");
            }
            if self.callback_secret.is_none() {
                missing.push("WAOTP_CALLBACK_SECRET");
            }
            if self.require_approved_templates && self.waba_id.is_none() {
                missing.push("WAOTP_WABA_ID");
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Missing(missing))
        }
    }
}

/// The PostgreSQL engine's connection URL (`postgres://user:password@host:port/db?…`). It may
/// carry a password, so it is held as a secret: `Debug`, `Display` and every error show it with
/// the password masked ([`DatabaseUrl::masked`]); only the engine reads the full URL.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    /// Accepts `postgres://` and `postgresql://` URLs (the schemes libpq and tokio-postgres
    /// read); anything else is a [`ConfigError`] naming `WAOTP_DATABASE_URL`, which never
    /// repeats the value's password.
    pub fn parse(url: &str) -> Result<DatabaseUrl, ConfigError> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(DatabaseUrl(SecretString::from(url.to_owned()))),
            _ => Err(ConfigError::Invalid {
                name: "WAOTP_DATABASE_URL",
                message: match scheme {
                    Some(scheme) => format!(
                        "`{}` is a {scheme}:// URL; expected postgres://user:password@host:port/database",
                        mask_password(url)
                    ),
                    // Not a URL at all (a libpq "host=… password=…" string, say): not repeated,
                    // as it may hold a password in a form the masking does not know.
                    None => "not a URL; expected postgres://user:password@host:port/database"
                        .to_owned(),
                },
            }),
        }
    }

    /// The full URL, password included: for opening the connection pool, never for display.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password (in the user info, or a `password=` query parameter)
    /// replaced by `***`: what logs and messages show.
    pub fn masked(&self) -> String {
        mask_password(self.expose())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.masked())
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

/// `url` with the password of its user info and of any `password=` query parameter masked.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The user info ends at the last '@' of the authority (a password may contain '@').
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let file: FileSettings = toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(file.into_pairs())
}

/// Whether the tenants file at `path` gives some number an access token, which takes the
/// deployment out of sandbox mode. Only that is read here: a file that cannot be read or parsed
/// counts as naming none, and the tenants loader then reports its problems with their
/// positions.
fn tenants_name_a_token(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(file) = text.parse::<toml::Table>() else {
        return false;
    };
    let tables = |value: Option<&toml::Value>| -> Vec<toml::Table> {
        value
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    };
    tables(file.get("merchant")).iter().any(|merchant| {
        tables(merchant.get("number"))
            .iter()
            .any(|number| number.contains_key("access_token_env"))
    })
}

/// Whether the Graph API base URL is Meta's own (`graph.facebook.com` or a subdomain).
fn is_meta_graph_url(url: &str) -> bool {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .to_ascii_lowercase();
    let host = rest.split(['/', ':', '?']).next().unwrap_or("");
    host == "facebook.com" || host.ends_with(".facebook.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_give_sandbox_mode() {
        let s = Settings::from_vars(HashMap::new()).expect("defaults are valid");
        assert!(s.sandbox());
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.graph_url, DEFAULT_GRAPH_URL);
    }

    #[test]
    fn production_mode_names_every_missing_secret() {
        let err = Settings::from_vars(vars(&[("WAOTP_ACCESS_TOKEN", "tok")]))
            .expect_err("secrets are missing");
        let text = err.to_string();
        for name in [
            "WAOTP_VERIFY_TOKEN",
            "WAOTP_APP_SECRET",
            "WAOTP_PHONE_NUMBER_ID",
            "WAOTP_API_KEYS",
            "WAOTP_CALLBACK_SECRET",
        ] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Settings::from_vars(vars(&[
            ("WAOTP_APP_SECRET", "app-secret-value"),
            ("WAOTP_API_KEYS", "key-one, key-two"),
        ]))
        .expect("valid");
        assert_eq!(s.api_keys.len(), 2);
        let shown = format!("{s:?}");
        assert!(!shown.contains("app-secret-value"));
        assert!(!shown.contains("key-one"));
    }

    #[test]
    fn file_fills_in_and_environment_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("waotp.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\napi_keys = [\"a\", \"b\"]\nlog = \"debug\"\n",
        )
        .expect("write");
        let s = Settings::from_vars(vars(&[
            ("WAOTP_CONFIG", path.to_str().expect("utf8")),
            ("WAOTP_LOG", "warn"),
        ]))
        .expect("valid");
        assert_eq!(s.listen, "127.0.0.1:9000");
        assert_eq!(s.api_keys.len(), 2);
        assert_eq!(s.log, "warn");
    }

    #[test]
    fn the_in_doubt_wait_has_a_floor_against_meta_only() {
        let s = Settings::from_vars(HashMap::new()).expect("defaults");
        assert_eq!(s.in_doubt_wait.as_secs(), DEFAULT_IN_DOUBT_SECONDS);
        for bad in ["0", "3601", "soon"] {
            let err = Settings::from_vars(vars(&[("WAOTP_IN_DOUBT_SECONDS", bad)]))
                .expect_err("out of range");
            assert!(err.to_string().contains("WAOTP_IN_DOUBT_SECONDS"), "{err}");
        }
        // Meta's API (the default URL) keeps statuses a fair chance to arrive …
        let err = Settings::from_vars(vars(&[
            ("WAOTP_IN_DOUBT_SECONDS", "5"),
            ("WAOTP_ACCESS_TOKEN", "t"),
        ]))
        .expect_err("too short against Meta");
        assert!(err.to_string().contains("WAOTP_IN_DOUBT_SECONDS"), "{err}");
        // … while a local fake of it may be fast.
        let s = Settings::from_vars(vars(&[
            ("WAOTP_IN_DOUBT_SECONDS", "1"),
            ("WAOTP_GRAPH_URL", "http://127.0.0.1:9/v23.0"),
        ]))
        .expect("a fake may use a short wait");
        assert_eq!(s.in_doubt_wait.as_secs(), 1);
        // The sandbox sends nothing to Meta.
        Settings::from_vars(vars(&[("WAOTP_IN_DOUBT_SECONDS", "1")])).expect("sandbox");
        assert!(is_meta_graph_url("https://graph.facebook.com/v23.0"));
        assert!(!is_meta_graph_url(
            "https://graph.facebook.com.evil.example/v23.0"
        ));
    }

    #[test]
    fn send_rate_defaults_to_meta_default_and_stays_within_its_maximum() {
        let s = Settings::from_vars(HashMap::new()).expect("defaults");
        assert_eq!(s.sends_per_second, DEFAULT_SENDS_PER_SECOND);
        let s = Settings::from_vars(vars(&[("WAOTP_SENDS_PER_SECOND", "1000")])).expect("valid");
        assert_eq!(s.sends_per_second, 1000);
        for bad in ["0", "1001", "fast", "-5"] {
            let err = Settings::from_vars(vars(&[("WAOTP_SENDS_PER_SECOND", bad)]))
                .expect_err("out of range");
            assert!(err.to_string().contains("WAOTP_SENDS_PER_SECOND"), "{err}");
        }
        // The code ceiling is held to the OTP policy's own range.
        for bad in ["0", "1000001"] {
            let err = Settings::from_vars(vars(&[("WAOTP_OTP_SENDS_PER_HOUR", bad)]))
                .expect_err("out of range");
            assert!(
                err.to_string().contains("WAOTP_OTP_SENDS_PER_HOUR"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_unverified_body_budget_defaults_to_64_mib_and_holds_one_body_at_least() {
        let s = Settings::from_vars(HashMap::new()).expect("defaults");
        assert_eq!(s.webhook_buffer_bytes, 64 * 1024 * 1024);
        let s = Settings::from_vars(vars(&[("WAOTP_WEBHOOK_BUFFER_MIB", "3")])).expect("valid");
        assert_eq!(s.webhook_buffer_bytes, 3 * 1024 * 1024);
        for bad in ["2", "0", "4097", "lots"] {
            let err = Settings::from_vars(vars(&[("WAOTP_WEBHOOK_BUFFER_MIB", bad)]))
                .expect_err("out of range");
            assert!(
                err.to_string().contains("WAOTP_WEBHOOK_BUFFER_MIB"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_database_url_is_optional_and_only_postgres() {
        let s = Settings::from_vars(HashMap::new()).expect("defaults");
        assert!(s.database_url.is_none(), "unset: the embedded engine");
        for url in [
            "postgres://waotp:pw@db.internal:5432/waotp",
            "postgresql://waotp@127.0.0.1/waotp?sslmode=disable",
            "  postgres://localhost/waotp  ",
            "POSTGRES://localhost/waotp",
        ] {
            let s = Settings::from_vars(vars(&[("WAOTP_DATABASE_URL", url)]))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(s.database_url.expect("set").expose(), url.trim());
        }
        let s = Settings::from_vars(vars(&[("WAOTP_DATABASE_URL", "   ")])).expect("blank");
        assert!(s.database_url.is_none(), "blank counts as unset");
        for url in [
            "mysql://root:hunter2@db/waotp",
            "http://db:5432/waotp",
            "sqlite:///var/lib/waotp.db",
            "host=db user=waotp password=hunter2",
            "db.internal:5432/waotp",
        ] {
            let err = Settings::from_vars(vars(&[("WAOTP_DATABASE_URL", url)]))
                .expect_err(url)
                .to_string();
            assert!(err.contains("WAOTP_DATABASE_URL"), "{err}");
            assert!(err.contains("postgres://"), "says what is expected: {err}");
            assert!(
                !err.contains("hunter2"),
                "the password is not repeated: {err}"
            );
        }
    }

    #[test]
    fn the_database_password_is_masked_wherever_the_url_is_shown() {
        let s = Settings::from_vars(vars(&[(
            "WAOTP_DATABASE_URL",
            "postgres://waotp:s3cr%40t:pw@db.internal:5432/waotp?sslmode=require&password=other",
        )]))
        .expect("valid");
        let url = s.database_url.clone().expect("set");
        assert_eq!(
            url.masked(),
            "postgres://waotp:***@db.internal:5432/waotp?sslmode=require&password=***"
        );
        assert_eq!(url.to_string(), url.masked());
        for shown in [format!("{s:?}"), format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(!shown.contains("other"), "{shown}");
            assert!(shown.contains("db.internal:5432"), "{shown}");
        }
        assert_eq!(
            mask_password("postgresql://waotp@db/waotp"),
            "postgresql://waotp@db/waotp",
            "nothing to mask"
        );
        assert_eq!(
            mask_password("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db",
            "the user info ends at the last @"
        );
        // From the TOML file too.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("waotp.toml");
        std::fs::write(&path, "database_url = \"postgres://u:filepw@h/db\"\n").expect("write");
        let s = Settings::from_vars(vars(&[("WAOTP_CONFIG", path.to_str().expect("utf8"))]))
            .expect("valid");
        assert_eq!(
            s.database_url.expect("from the file").expose(),
            "postgres://u:filepw@h/db"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = Settings::from_vars(vars(&[("WAOTP_LISTEN", "nowhere")])).expect_err("bad");
        assert!(err.to_string().contains("WAOTP_LISTEN"));
        let err =
            Settings::from_vars(vars(&[("WAOTP_LOG_FORMAT", "xml")])).expect_err("bad format");
        assert!(err.to_string().contains("WAOTP_LOG_FORMAT"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listn = \"x\"\n").expect("write");
        let err = Settings::from_vars(vars(&[("WAOTP_CONFIG", path.to_str().expect("utf8"))]))
            .expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn api_rate_burst_and_drain_have_defaults_and_ranges() {
        let s = Settings::from_vars(HashMap::new()).expect("defaults");
        assert_eq!((s.api_rate, s.api_burst), (100, 200));
        assert_eq!(s.drain, std::time::Duration::from_secs(10));
        let s = Settings::from_vars(vars(&[
            ("WAOTP_API_RATE", "5"),
            ("WAOTP_API_BURST", "1"),
            ("WAOTP_DRAIN_SECONDS", "300"),
        ]))
        .expect("in range");
        assert_eq!((s.api_rate, s.api_burst), (5, 1));
        assert_eq!(s.drain, std::time::Duration::from_secs(300));
        for (name, bad) in [
            ("WAOTP_API_RATE", "0"),
            ("WAOTP_API_RATE", "1.5"),
            ("WAOTP_API_BURST", "1000001"),
            ("WAOTP_DRAIN_SECONDS", "0"),
            ("WAOTP_DRAIN_SECONDS", "301"),
        ] {
            let err = Settings::from_vars(vars(&[(name, bad)])).expect_err("out of range");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_business_number_must_be_a_possible_number() {
        for good in ["+15550783881", "15550783881", "+919876543210"] {
            let s = Settings::from_vars(vars(&[("WAOTP_BUSINESS_NUMBER", good)])).expect(good);
            assert_eq!(s.business_number.as_deref(), Some(good));
        }
        for bad in [
            "+99912345678",
            "+1555078388",
            "+91 98765 43210",
            "+0123456789",
        ] {
            let err = Settings::from_vars(vars(&[("WAOTP_BUSINESS_NUMBER", bad)]))
                .expect_err("not a possible number");
            assert!(err.to_string().contains("WAOTP_BUSINESS_NUMBER"), "{err}");
        }
    }

    #[test]
    fn the_documented_defaults_are_the_ones_applied() {
        let defaults = format!(
            "{:?}",
            Settings::from_vars(HashMap::new()).expect("defaults")
        );
        let docs = documented();
        for doc in &docs {
            let Some(default) = &doc.default else {
                continue;
            };
            let explicit = Settings::from_vars(vars(&[(doc.name, default)]))
                .unwrap_or_else(|e| panic!("{}={default}: {e}", doc.name));
            assert_eq!(format!("{explicit:?}"), defaults, "{}", doc.name);
        }
        // Every documented name is one this module reads, once.
        let source = include_str!("config.rs");
        let source = &source[..source.find("#[cfg(test)]").expect("tests")];
        for doc in &docs {
            assert!(
                source.matches(&format!("\"{}\"", doc.name)).count() > 1,
                "{} is documented but never read",
                doc.name
            );
        }
        let mut names: Vec<_> = docs.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), docs.len());
    }

    #[test]
    fn a_tenants_file_replaces_the_single_merchant_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tenants.toml");
        let number = "[[merchant]]\nid = \"a\"\n[[merchant.number]]\nphone_number_id = \"1\"\n";
        std::fs::write(&path, number).expect("write");
        let file = path.to_str().expect("utf8");
        // No number names a token: sandbox mode, nothing else required.
        let s = Settings::from_vars(vars(&[("WAOTP_TENANTS", file)])).expect("sandbox");
        assert!(s.sandbox());
        assert_eq!(s.tenants.as_deref(), Some(path.as_path()));
        // A token: the service-wide secrets are required, not the ones the file replaces.
        std::fs::write(&path, format!("{number}access_token_env = \"T\"\n")).expect("write");
        let err = Settings::from_vars(vars(&[("WAOTP_TENANTS", file)])).expect_err("secrets");
        assert_eq!(
            err.to_string(),
            "missing required settings: WAOTP_VERIFY_TOKEN, WAOTP_APP_SECRET"
        );
        let s = Settings::from_vars(vars(&[
            ("WAOTP_TENANTS", file),
            ("WAOTP_VERIFY_TOKEN", "v"),
            ("WAOTP_APP_SECRET", "s"),
        ]))
        .expect("live");
        assert!(!s.sandbox());
        // Every replaced variable, from the environment or the settings file, is named.
        let config = dir.path().join("waotp.toml");
        std::fs::write(&config, "waba_id = \"1\"\n").expect("write");
        let err = Settings::from_vars(vars(&[
            ("WAOTP_TENANTS", file),
            ("WAOTP_CONFIG", config.to_str().expect("utf8")),
            ("WAOTP_API_KEYS", "k"),
            ("WAOTP_SENDS_PER_SECOND", "5"),
        ]))
        .expect_err("both");
        assert_eq!(
            err.to_string(),
            "WAOTP_TENANTS declares the merchants and their numbers; unset WAOTP_API_KEYS, WAOTP_WABA_ID, WAOTP_SENDS_PER_SECOND"
        );
        for name in REPLACED_BY_TENANTS {
            let err =
                Settings::from_vars(vars(&[("WAOTP_TENANTS", file), (name, "1")])).expect_err(name);
            assert!(err.to_string().ends_with(&format!("unset {name}")), "{err}");
        }
    }

    #[test]
    fn an_invalid_log_filter_is_named() {
        for bad in ["waotp=loud", "info,[{", "=debug"] {
            let err = Settings::from_vars(vars(&[("WAOTP_LOG", bad)])).expect_err(bad);
            assert!(err.to_string().contains("WAOTP_LOG"), "{err}");
        }
        let s = Settings::from_vars(vars(&[("WAOTP_LOG", "waotp=debug,info")])).expect("valid");
        assert_eq!(s.log, "waotp=debug,info");
    }
}
