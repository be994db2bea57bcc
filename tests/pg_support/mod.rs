//! A throwaway PostgreSQL database per test, on the server named by `WAOTP_TEST_DATABASE_URL`
//! (`.ci/run` starts one; `postgres://postgres@127.0.0.1:5433/postgres`, say). Without the
//! variable the PostgreSQL tests print a notice and pass: a plain `cargo test` needs no server.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the server the PostgreSQL tests use.
pub const URL_VAR: &str = "WAOTP_TEST_DATABASE_URL";

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    /// Connection URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

/// A fresh, empty database, or `None` (after printing why) when no server is configured.
pub async fn fresh_database(test: &str) -> Option<TestDatabase> {
    let Ok(admin_url) = std::env::var(URL_VAR) else {
        eprintln!(
            "PostgreSQL tests skipped ({test}): set {URL_VAR}=postgres://user@host:port/db to run them"
        );
        return None;
    };
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "waotp_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        test.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase()
    );
    let admin = connect(&admin_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {URL_VAR}: {e}"));
    let url = with_database(&admin_url, &name);
    Some(TestDatabase {
        url,
        admin_url,
        name,
    })
}

/// A client of `url`, its connection driven in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // The path starts at the first '/' after "scheme://authority".
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropped from sync code, possibly inside a runtime: a thread of its own does the I/O.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let admin = connect(&admin_url).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}
