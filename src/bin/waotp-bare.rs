//! `waotp-bare`: the yardstick for `waotp-load`. The same actix-web, with the same default worker
//! count and the same 3 MiB body limit, whose only work on `POST /webhook` is checking
//! `X-Hub-Signature-256` and answering 200 (401 when the signature is wrong). Nothing is parsed,
//! stored or flushed, so `waotp` throughput divided by this one's is the cost of the pipeline.
//!
//! Run: `WAOTP_APP_SECRET=s waotp-bare --listen 127.0.0.1:8081`, then
//! `waotp-load --url http://127.0.0.1:8080/webhook --bare-url http://127.0.0.1:8081/webhook`.

// The bound address goes to standard output so scripts can read it.
#![allow(clippy::print_stdout)]

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use clap::Parser;
use waotp::webhook::signature::SignatureVerifier;
use waotp::webhook::MAX_BODY_BYTES;

// The server's allocator, so that the comparison is of the pipeline alone.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "waotp-bare",
    about = "Signature-only webhook server, the baseline for waotp-load"
)]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, env = "WAOTP_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// App Secret the signatures are checked with.
    #[arg(long, env = "WAOTP_APP_SECRET")]
    secret: String,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    verifier: web::Data<SignatureVerifier>,
) -> HttpResponse {
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .map(|h| h.as_bytes());
    match verifier.verify(header, &body) {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(_) => HttpResponse::Unauthorized().finish(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let verifier = web::Data::new(SignatureVerifier::new(args.secret.as_bytes()));
    // The same runtime shape as `waotp serve`: a multi-threaded tokio runtime hosting actix's
    // default workers (one per core).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = std::net::TcpListener::bind(&args.listen)
            .with_context(|| format!("binding {}", args.listen))?;
        println!("listening on {}", listener.local_addr()?);
        HttpServer::new(move || {
            App::new()
                .app_data(verifier.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .route("/webhook", web::post().to(receive))
        })
        .listen(listener)?
        .run()
        .await
        .context("serving")
    })
}
