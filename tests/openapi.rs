//! The OpenAPI description against the code and the running server: the committed
//! `docs/openapi.json` is exactly what the code generates (set `UPDATE_OPENAPI=1` to rewrite it
//! after changing the API), the server serves it without a key, and every route it describes
//! exists on the server. Both ways: the description's operations are exactly the route table's,
//! and nothing but the route table registers a `/v1` path.

mod common;

use serde_json::Value;
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let generated = waotp::api::openapi::document_text();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path(), generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the API the code describes; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test openapi` and review the difference"
    );
}

#[test]
fn the_description_has_one_operation_per_route_of_the_route_table_and_no_other() {
    use waotp::api::routes::V1Route;
    let doc = waotp::api::openapi::document();
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let registered: std::collections::BTreeSet<_> = V1Route::ALL
        .iter()
        .map(|r| (r.method().to_string(), r.path().to_owned()))
        .collect();
    assert_eq!(
        registered.len(),
        V1Route::ALL.len(),
        "a route is in the table twice"
    );
    assert_eq!(described, registered);
}

/// Every `.rs` file under `dir`.
fn sources(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn nothing_but_the_route_table_registers_a_v1_path() {
    // A `/v1` route registered anywhere else would be served without being described.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let table = root.join("src/api/routes.rs");
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.contains(&table));
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| **f != table) {
        let text: String = std::fs::read_to_string(file)
            .expect("read")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for call in [
            "route(\"/v1",
            "resource(\"/v1",
            "scope(\"/v1",
            "service(\"/v1",
        ] {
            if text.contains(call) {
                offenders.push(format!("{}: {call}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "register /v1 routes in src/api/routes.rs, where the OpenAPI description must describe \
         them: {offenders:?}"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_error_code_of_every_route() {
    let doc = waotp::api::openapi::document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/cancel",
        "/v1/sessions/{id}/check",
        "/v1/stats",
        "/v1/sandbox/messages",
        "/v1/sandbox/inbound",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(route), "{route} is not described");
    }
    // Every refusal of every operation lists its codes, each one in the catalogue.
    let catalogue: Vec<&str> = waotp::api::error::CATALOGUE
        .iter()
        .map(|c| c.code)
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("operation") {
            for (status, response) in op["responses"].as_object().expect("responses") {
                let status: u16 = status.parse().expect("status");
                if status < 400 {
                    continue;
                }
                let codes = response["content"]["application/json"]["schema"]["properties"]
                    ["error"]["properties"]["code"]["enum"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path} {status}: no code list"));
                assert!(!codes.is_empty(), "{method} {path} {status}");
                for code in codes {
                    let code = code.as_str().expect("code");
                    assert!(catalogue.contains(&code), "{code}");
                    named.insert(code.to_owned());
                }
            }
        }
    }
    // Only the answers to an unknown route or method belong to no route.
    let unused: Vec<_> = catalogue
        .iter()
        .filter(|c| !named.contains(**c) && !["route_not_found", "method_not_allowed"].contains(*c))
        .collect();
    assert!(unused.is_empty(), "codes no route answers: {unused:?}");
}

#[tokio::test]
async fn the_server_serves_it_without_a_key_and_has_every_route_it_describes() {
    let app = common::spawn_app_with(&[("WAOTP_API_KEYS", "k")]).await;
    let res = app
        .client
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let served: Value = res.json().await.expect("json");
    assert_eq!(served, waotp::api::openapi::document());
    for (path, item) in served["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            let url = format!("{}{}", app.base, path.replace("{id}", "ses_none"));
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let res = app
                .client
                .request(method.clone(), &url)
                .send()
                .await
                .expect("sent");
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error"]["code"], "route_not_found",
                "{method} {path} is described but not served ({status})"
            );
        }
    }
}
