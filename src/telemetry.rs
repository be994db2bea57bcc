//! Logging setup and the masking every log line relies on.
//!
//! Owns the tracing subscriber (`pretty` or `json`, filtered by `WAOTP_LOG`) and [`Masked`], the
//! only sanctioned way to put a phone number in a log. Secrets never come here: they are wrapped
//! in `secrecy` types that cannot be formatted.

use std::fmt;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "`{other}` is not a log format; use `pretty` or `json`"
            )),
        }
    }
}

/// Checks a `WAOTP_LOG` filter; the error says what is wrong with it.
pub fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter).map(drop).map_err(|e| {
        format!("`{filter}` is not a log filter such as `info` or `waotp=debug,info`: {e}")
    })
}

/// The filter of a `WAOTP_LOG` value, `info` if it cannot be read. Whatever it asks for, the
/// PostgreSQL driver's statement log stays off: at `debug` it prints every query's parameters,
/// which hold customers' full numbers, sealed records and, once, the shared OTP key.
pub fn filter(filter: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    match "tokio_postgres::query=info".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    }
}

/// Installs the global subscriber once; later calls (as in tests) are ignored. The filter was
/// checked with [`check_filter`] when the settings were read.
pub fn init(filter: &str, format: LogFormat) {
    let filter = self::filter(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A phone number (or WhatsApp id) shown with all but the last four characters hidden.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars: Vec<char> = self.0.chars().collect();
        // Short values are hidden whole: showing four of five characters would reveal them.
        let shown = if chars.len() > 6 { 4 } else { 0 };
        for _ in 0..chars.len() - shown {
            f.write_str("*")?;
        }
        for c in &chars[chars.len() - shown..] {
            fmt::Write::write_char(f, *c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_four_digits() {
        assert_eq!(Masked("+919876543210").to_string(), "*********3210");
        assert_eq!(Masked("972987654321").to_string(), "********4321");
        assert_eq!(Masked("12345").to_string(), "*****");
        assert_eq!(Masked("").to_string(), "");
    }

    #[test]
    fn the_database_drivers_statement_parameters_are_never_logged() {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for wanted in [
            "trace",
            "debug",
            "tokio_postgres=trace",
            "tokio_postgres::query=debug",
        ] {
            let logs = Captured::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter(wanted))
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::callsite::rebuild_interest_cache();
                tracing::debug!(target: "tokio_postgres::query", "parameters: 919876543210");
                tracing::trace!(target: "tokio_postgres::connection", "control line");
            });
            let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
            assert!(!text.contains("919876543210"), "{wanted}: {text}");
            if wanted.contains("trace") {
                assert!(text.contains("control line"), "{wanted}: the capture works");
            }
        }
    }

    #[test]
    fn parses_log_formats() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
