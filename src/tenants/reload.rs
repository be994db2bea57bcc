//! Where the registry comes from: the tenants file when `WAOTP_TENANTS` names one, else the
//! single-merchant settings; and the watch that reloads the file while the server runs.
//!
//! Owns reading at start and swapping on change, nothing else: what a valid file is belongs to
//! [`super::file`], what a removed number or merchant means to sessions belongs to the routes
//! and the runtime, which look the registry up per request.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::{file, Tenants, TenantsHandle};
use crate::config::Settings;

/// The registry to start with: the tenants file's merchants when `settings.tenants` names a
/// file (every problem as `file:line:col: message`, one per line), otherwise merchant
/// `default` of the single-merchant settings with `api_keys` as its keys.
pub fn load(settings: &Settings, api_keys: &[SecretString]) -> Result<Tenants, String> {
    match &settings.tenants {
        Some(path) => read_checked(path, settings),
        None => Ok(Tenants::from_settings(settings, api_keys)),
    }
}

/// The file at `path`, with the checks that depend on the service-wide settings.
fn read_checked(path: &Path, settings: &Settings) -> Result<Tenants, String> {
    let tenants = file::read(path, &|name| std::env::var(name).ok())?;
    if tenants.sandbox() != settings.sandbox() {
        // Sandbox mode decides, at start, which routes exist and whether webhooks are
        // verified; a file that switches it takes a restart.
        return Err(format!(
            "{}: {} access token now, which switches sandbox mode; that takes a restart",
            path.display(),
            if tenants.sandbox() {
                "no number has an"
            } else {
                "a number has an"
            }
        ));
    }
    if settings.require_approved_templates {
        let missing: Vec<&str> = tenants
            .merchants()
            .iter()
            .filter(|m| !m.sandbox() && m.waba_id.is_none())
            .map(|m| m.id.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}: WAOTP_REQUIRE_APPROVED_TEMPLATES needs the waba_id of merchant(s) {}",
                path.display(),
                missing.join(", ")
            ));
        }
    }
    Ok(tenants)
}

/// Reloads the tenants file when it changes, looking every `every` (2 s in the server), and on
/// `SIGHUP`: a valid file is passed to `on_change`, then replaces the registry in `handle`; an
/// invalid one is logged with its `file:line:col` errors, once per change, and the running
/// registry is kept. The file's content is taken as the loaded one when `watch` is called (call
/// it right after [`load`], then spawn the future). Ends at once without a tenants file.
pub fn watch(
    handle: TenantsHandle,
    settings: Settings,
    every: Duration,
    on_change: impl Fn(&Tenants) + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    watch_with(handle, settings, every, on_change, |error| {
        tracing::error!(
            error = %error,
            "the tenants file is invalid; the previous merchants and numbers stay in force"
        );
    })
}

/// [`watch`] with what to do about an invalid file.
fn watch_with(
    handle: TenantsHandle,
    settings: Settings,
    every: Duration,
    on_change: impl Fn(&Tenants) + Send + 'static,
    on_error: impl Fn(&str) + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let seen = settings.tenants.as_deref().map(fingerprint);
    watch_from(handle, settings, every, seen, on_change, on_error)
}

async fn watch_from(
    handle: TenantsHandle,
    settings: Settings,
    every: Duration,
    seen: Option<Option<[u8; 32]>>,
    on_change: impl Fn(&Tenants) + Send + 'static,
    on_error: impl Fn(&str) + Send + 'static,
) {
    let (Some(path), Some(mut seen)) = (settings.tenants.clone(), seen) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_fired = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fired = std::future::pending::<()>();
        // SIGHUP reloads even an unchanged file, as it does the flows.
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = hup_fired => true,
        };
        let now = fingerprint(&path);
        if now == seen && !forced {
            continue;
        }
        seen = now;
        match read_checked(&path, &settings) {
            Ok(tenants) => {
                let numbers: usize = tenants.merchants().iter().map(|m| m.numbers.len()).sum();
                tracing::info!(
                    merchants = tenants.merchants().len(),
                    numbers,
                    "tenants file reloaded"
                );
                // What depends on the registry (each merchant's flows, each number's
                // client) is rebuilt first, so that an event routed by the new registry finds
                // its merchant ready.
                on_change(&tenants);
                handle.replace(tenants);
            }
            Err(error) => on_error(&error),
        }
    }
}

/// The file's content digest (`None` while it cannot be read): a change of content, not of
/// modification time, is what reloads, so an editor's save of identical bytes does nothing and
/// two saves within the file system's time granularity are both seen.
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    const ONE: &str = r#"
[[merchant]]
id = "shop"
flows = "."

[[merchant.number]]
phone_number_id = "1001"
"#;

    fn settings(path: &Path) -> Settings {
        let vars = HashMap::from([("WAOTP_TENANTS".to_owned(), path.display().to_string())]);
        Settings::from_vars(vars).expect("sandbox settings with a tenants file")
    }

    /// Polls `done` until it holds, failing after a generous deadline.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn load_reads_the_file_or_the_single_merchant_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, ONE).expect("write");
        let t = load(&settings(&path), &[]).expect("valid file");
        assert_eq!(
            t.scope_of(Some("1001")),
            Some(super::super::Scope::new("shop", "1001"))
        );
        assert_eq!(t.scope_of(Some("1002")), None);

        let single = Settings::from_vars(HashMap::new()).expect("defaults");
        let key = SecretString::from("k".to_owned());
        let t = load(&single, &[key]).expect("single merchant");
        assert_eq!(t.default_scope().merchant, super::super::DEFAULT_MERCHANT);
        assert!(t.merchant_for_key(b"k").is_some());

        std::fs::write(&path, ONE.replace("1001", "10x1")).expect("write");
        let error = load(&settings(&path), &[]).expect_err("invalid file");
        assert!(
            error.contains(&format!("{}:7:19: phone_number_id", path.display())),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_changed_file_replaces_the_registry_and_an_invalid_one_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, ONE).expect("write");
        let settings = settings(&path);
        let handle = TenantsHandle::new(load(&settings, &[]).expect("valid"));
        let changes = Arc::new(Mutex::new(Vec::<usize>::new()));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let watcher = tokio::spawn(watch_with(
            handle.clone(),
            settings,
            Duration::from_millis(20),
            {
                let changes = changes.clone();
                move |t: &Tenants| {
                    let numbers = t.merchants().iter().map(|m| m.numbers.len()).sum();
                    changes.lock().expect("lock").push(numbers);
                }
            },
            {
                let errors = errors.clone();
                move |e: &str| errors.lock().expect("lock").push(e.to_owned())
            },
        ));

        // A second number: routed once the file is seen.
        let two = format!("{ONE}\n[[merchant.number]]\nphone_number_id = \"1002\"\n");
        std::fs::write(&path, &two).expect("write");
        eventually("the added number", || {
            handle.current().scope_of(Some("1002")).is_some()
        })
        .await;
        assert_eq!(*changes.lock().expect("lock"), vec![2]);

        // A broken file is reported with its position and changes nothing.
        std::fs::write(
            &path,
            two.replace("phone_number_id = \"1002\"", "phone_numbr_id = \"1002\""),
        )
        .expect("write");
        eventually("the error", || !errors.lock().expect("lock").is_empty()).await;
        let error = errors.lock().expect("lock")[0].clone();
        assert!(
            error.contains(&format!(
                "{}:10:1: unknown key `phone_numbr_id`",
                path.display()
            )),
            "{error}"
        );
        assert!(handle.current().scope_of(Some("1002")).is_some());
        assert_eq!(changes.lock().expect("lock").len(), 1);

        // Removing the number again stops routing it.
        std::fs::write(&path, ONE).expect("write");
        eventually("the removed number", || {
            handle.current().scope_of(Some("1002")).is_none()
        })
        .await;
        assert_eq!(*changes.lock().expect("lock"), vec![2, 1]);
        assert_eq!(
            errors.lock().expect("lock").len(),
            1,
            "an error is logged once per change"
        );
        watcher.abort();
    }

    #[tokio::test]
    async fn a_file_that_would_leave_sandbox_mode_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, ONE).expect("write");
        let settings = settings(&path);
        assert!(settings.sandbox());
        let live = ONE.replace(
            "phone_number_id = \"1001\"",
            "phone_number_id = \"1001\"\naccess_token_env = \"PATH\"",
        ) + "";
        let live = live.replace(
            "flows = \".\"",
            "flows = \".\"\napi_keys = [\"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"]\ncallback_secret_env = \"PATH\"",
        );
        std::fs::write(&path, live).expect("write");
        let error = read_checked(&path, &settings).expect_err("switches sandbox mode");
        assert!(error.contains("takes a restart"), "{error}");
    }
}
