//! A deadline on reading request bodies, so a slow or stalled client cannot hold a connection
//! (and the memory of its half-read body) for ever.
//!
//! actix-web bounds the time to receive the request *head* (`client_request_timeout`) but not
//! the body: a client that sends one byte a second, or stops half-way, keeps its request open
//! indefinitely. This middleware swaps the request's payload for one that fails with
//! [`ErrorKind::TimedOut`] once [`BODY_DEADLINE`] has passed since the head arrived. Handlers
//! see an ordinary payload error and answer it; the half-read connection is then closed.
//! It owns nothing else: no routing, no limits on size (the handlers keep those).

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use futures_util::StreamExt;
use std::io::{Error, ErrorKind};
use std::time::Duration;

/// How long a client may take to send a whole body once its head has arrived. A 3 MiB webhook
/// needs about 2.5 Mbit/s to make it: WhatsApp's senders are far faster, an attacker is not.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Whether a payload error is this middleware's deadline (handlers answer it with 408).
pub fn is_deadline(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == ErrorKind::TimedOut)
}

/// The middleware: wraps the payload of every request with the deadline.
pub async fn body_deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    let (http, inner) = req.into_parts();
    let bounded = futures_util::stream::unfold(Some(inner), move |state| async move {
        let mut inner = state?;
        match tokio::time::timeout_at(deadline, inner.next()).await {
            Ok(Some(item)) => Some((item, Some(inner))),
            Ok(None) => None,
            // Yield the error once, then end: the inner payload is dropped, which tells the
            // server to stop reading this connection.
            Err(_) => Some((
                Err(PayloadError::Io(Error::new(
                    ErrorKind::TimedOut,
                    "request body not received in time",
                ))),
                None,
            )),
        }
    });
    let req = ServiceRequest::from_parts(
        http,
        Payload::Stream {
            payload: Box::pin(bounded),
        },
    );
    next.call(req).await
}
