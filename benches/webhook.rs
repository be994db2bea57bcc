//! Micro-benchmarks of the webhook's hot path: signature check, payload parsing, recording an
//! event in sled (in memory; the group flush is measured by the load generator instead), and
//! what every request pays for its log span and `X-Request-Id` with info-level logging on.
//!
//! Run: `cargo bench --bench webhook`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use waotp::webhook::{payload, signature::SignatureVerifier};

fn body(id: u64) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Kerry Fisher"}},"wa_id":"16315551181","user_id":"US.13491208655302741918"}}],"messages":[{{"from":"16315551181","id":"wamid.bench.{id}","timestamp":"1700000000","type":"text","text":{{"body":"Caf\u00e9 123 456 \ud83d\ude00"}}}}]}},"field":"messages"}}]}}]}}"#
    )
}

fn signature(c: &mut Criterion) {
    let verifier = SignatureVerifier::new(b"app-secret");
    let body = body(1);
    let header = verifier.sign(body.as_bytes());
    let mut g = c.benchmark_group("webhook");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("verify_signature", |b| {
        b.iter(|| verifier.verify(Some(header.as_bytes()), body.as_bytes()))
    });
    g.bench_function("parse_payload", |b| {
        b.iter(|| payload::parse(body.as_bytes()).map(|p| p.events.len()))
    });
    g.finish();
}

fn record(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = waotp::store::Store::open(dir.path(), |_| {}).expect("open store");
    let mut n = 0u64;
    c.bench_function("webhook/record_event", |b| {
        b.iter_batched(
            || {
                n += 1;
                payload::parse(body(n).as_bytes())
                    .expect("valid")
                    .events
                    .remove(0)
            },
            |event| {
                store
                    .inbound()
                    .record(&event, chrono::Utc::now().timestamp())
            },
            BatchSize::SmallInput,
        )
    });
}

/// The request middleware's own work: a request id made, an info span opened with it under an
/// info-level subscriber (formatting into a sink), and the header value built; beside a span
/// without the id, to see what the id costs.
fn request_span(c: &mut Criterion) {
    use actix_web::http::header::{HeaderMap, HeaderValue};
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let headers = HeaderMap::new();
        let mut g = c.benchmark_group("request");
        g.bench_function("id_span_and_header", |b| {
            b.iter(|| {
                let id = waotp::request_id::of(&headers);
                let span = tracing::info_span!("http", method = "POST", path = "/webhook", request_id = %id);
                let _entered = span.enter();
                HeaderValue::from_str(&id).is_ok()
            })
        });
        g.bench_function("span_without_id", |b| {
            b.iter(|| {
                let span = tracing::info_span!("http", method = "POST", path = "/webhook");
                let _entered = span.enter();
            })
        });
        g.bench_function("id_only", |b| b.iter(|| waotp::request_id::of(&headers)));
        g.finish();
    });
}

criterion_group!(benches, signature, record, request_span);
criterion_main!(benches);
