//! Taking in a webhook body whose signature is not yet known.
//!
//! Anyone can POST to `/webhook` with some `X-Hub-Signature-256`: until the last byte has arrived
//! and the HMAC matched, the body is a stranger's. [`UnverifiedBudget`] bounds the bytes held for
//! such bodies across all connections — a semaphore counted in bytes, taken as each piece
//! arrives and given back as soon as the body is verified, refused or dropped. A piece that does
//! not fit is refused ([`Refusal::OverBudget`], answered 503 with `Retry-After`, which WhatsApp
//! retries) and everything that body held is given back at once.
//!
//! Bodies are hashed as they come. One that arrives in a single piece (the usual WhatsApp
//! delivery) is kept as the server read it, without a copy; a longer one is gathered in a mapping
//! of its own whose pages go back to the system when it is dropped (see [`SPOOL_BYTES`]), so the
//! bodies of a refused burst do not stay behind in the allocator's heap. No buffer is sized from
//! the declared `Content-Length`, and the budget is charged in whole pages.
//! Owns nothing else: what the bytes mean is [`super::payload`]'s business.

use super::signature::{PendingSignature, SignatureError};
use super::MAX_BODY_BYTES;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::Semaphore;

/// Default bound on the bytes of unverified bodies held at once.
pub const DEFAULT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// The bytes that bodies not yet verified may hold, shared by every connection.
#[derive(Debug)]
pub struct UnverifiedBudget {
    bytes: Semaphore,
    total: usize,
}

impl UnverifiedBudget {
    /// A budget of `total` bytes; at least one body of the largest size must fit.
    pub fn new(total: usize) -> UnverifiedBudget {
        let total = total.clamp(MAX_BODY_BYTES, Semaphore::MAX_PERMITS);
        UnverifiedBudget {
            bytes: Semaphore::new(total),
            total,
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by any body right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Takes `n` more bytes for `held`, or says the budget is spent.
    fn take(&self, held: &mut Held<'_>, n: usize) -> bool {
        let Ok(count) = u32::try_from(n) else {
            return false;
        };
        match self.bytes.try_acquire_many(count) {
            Ok(permit) => {
                permit.forget();
                held.bytes += n;
                true
            }
            Err(_) => false,
        }
    }
}

/// Bytes of the budget held by one body, given back when dropped.
struct Held<'a> {
    budget: &'a UnverifiedBudget,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.bytes.add_permits(self.bytes);
        }
    }
}

/// Why a body was not taken in.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("body over 3 MiB")]
    TooLarge,
    #[error("too many unverified bodies are being received; try again later")]
    OverBudget,
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Signature(SignatureError),
}

/// Address space mapped for a body that arrives in more than one piece: room for the largest
/// body accepted. Only the pages written become resident, and the mapping is the spool's own,
/// outside the allocator's heap: dropping it gives every page back to the system at once,
/// whatever the allocator keeps for itself. A body gathered in a heap buffer would leave that
/// memory to the allocator, which may keep it.
const SPOOL_BYTES: usize = MAX_BODY_BYTES;
/// Memory is taken from the system in pages: a body is charged at least one.
const PAGE: usize = 4096;

fn pages(bytes: usize) -> usize {
    bytes.div_ceil(PAGE) * PAGE
}

/// What a body has received so far.
enum Gathered {
    Nothing,
    /// One piece, kept as the server read it (the usual WhatsApp delivery: no copy at all).
    One(Bytes),
    /// More than one: copied into a mapping of its own, see [`SPOOL_BYTES`].
    Spooled(Spool),
}

/// A body's bytes in an anonymous mapping of [`SPOOL_BYTES`], unmapped when dropped.
struct Spool {
    map: memmap2::MmapMut,
    len: usize,
}

impl Spool {
    /// Address space only, but a system that does not overcommit may refuse it: that is an
    /// overload like any other, not a reason to abort.
    fn new() -> Option<Spool> {
        let map = memmap2::MmapOptions::new()
            .len(SPOOL_BYTES)
            .map_anon()
            .ok()?;
        Some(Spool { map, len: 0 })
    }

    /// Appends `piece`; the caller has checked that the body stays within [`MAX_BODY_BYTES`].
    fn push(&mut self, piece: &[u8]) {
        let end = self.len + piece.len();
        self.map[self.len..end].copy_from_slice(piece);
        self.len = end;
    }

    fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

/// Reads a whole body from `payload`, holding its bytes against `budget` until `check` says it is
/// the one signed; returns it in one piece.
pub async fn read_signed<S>(
    mut payload: S,
    mut check: PendingSignature,
    budget: &UnverifiedBudget,
) -> Result<Bytes, Refusal>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    // Declared before the body, so dropped after it: the budget is given back only once the
    // memory it stands for is.
    let mut held = Held { budget, bytes: 0 };
    let mut body = Gathered::Nothing;
    let mut len = 0usize;
    while let Some(item) = payload.next().await {
        let piece = match item {
            Ok(piece) => piece,
            Err(e) if crate::request_deadline::is_deadline(&e) => {
                return Err(Refusal::Timeout(e.to_string()))
            }
            Err(e) => return Err(Refusal::Unreadable(e.to_string())),
        };
        if piece.is_empty() {
            continue;
        }
        len += piece.len();
        if len > MAX_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        // Charged in whole pages, so that many tiny bodies cannot hold more than the budget.
        let charge = pages(len).saturating_sub(held.bytes);
        if charge > 0 && !budget.take(&mut held, charge) {
            return Err(Refusal::OverBudget);
        }
        check.update(&piece);
        body = match body {
            Gathered::Nothing => Gathered::One(piece),
            Gathered::One(first) => {
                let mut spool = Spool::new().ok_or(Refusal::OverBudget)?;
                spool.push(&first);
                spool.push(&piece);
                Gathered::Spooled(spool)
            }
            Gathered::Spooled(mut spool) => {
                spool.push(&piece);
                Gathered::Spooled(spool)
            }
        };
    }
    check.finish().map_err(Refusal::Signature)?;
    Ok(match body {
        Gathered::Nothing => Bytes::new(),
        Gathered::One(piece) => piece,
        // Verified: copied out to its own size, and the mapping unmapped.
        Gathered::Spooled(spool) => Bytes::copy_from_slice(spool.bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::signature::SignatureVerifier;

    fn stream(pieces: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, PayloadError>> {
        futures_util::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    fn check(v: &SignatureVerifier, body: &[u8]) -> PendingSignature {
        v.begin(Some(v.sign(body).as_bytes())).expect("well-formed")
    }

    #[tokio::test]
    async fn a_signed_body_is_joined_and_its_bytes_given_back() {
        let v = SignatureVerifier::new(b"k");
        let budget = UnverifiedBudget::new(MAX_BODY_BYTES);
        let body = read_signed(
            stream(vec![b"{\"a\":", b"", b"1}"]),
            check(&v, b"{\"a\":1}"),
            &budget,
        )
        .await
        .expect("signed");
        assert_eq!(&body[..], b"{\"a\":1}");
        assert_eq!(budget.available(), budget.total());
        let one = read_signed(stream(vec![b"{}"]), check(&v, b"{}"), &budget)
            .await
            .expect("signed");
        assert_eq!(&one[..], b"{}");
        assert_eq!(budget.available(), budget.total());
    }

    #[tokio::test]
    async fn a_body_that_does_not_fit_is_refused_and_gives_back_what_it_held() {
        let v = SignatureVerifier::new(b"k");
        let budget = UnverifiedBudget::new(MAX_BODY_BYTES);
        // Another body holds all but 10 bytes.
        let mut other = Held {
            budget: &budget,
            bytes: 0,
        };
        assert!(budget.take(&mut other, MAX_BODY_BYTES - PAGE));
        let mut filler = vec![b'a'; PAGE - 8];
        let refused = read_signed(
            futures_util::stream::iter(vec![
                Ok(Bytes::from(filler.clone())),
                Ok(Bytes::from_static(b"0123456789abc")),
            ]),
            {
                filler.extend_from_slice(b"0123456789abc");
                check(&v, &filler)
            },
            &budget,
        )
        .await;
        assert!(matches!(refused, Err(Refusal::OverBudget)), "{refused:?}");
        assert_eq!(budget.available(), PAGE);
        drop(other);
        assert_eq!(budget.available(), budget.total());
    }

    #[tokio::test]
    async fn a_wrong_signature_is_refused_after_the_body_and_frees_it() {
        let v = SignatureVerifier::new(b"k");
        let budget = UnverifiedBudget::new(MAX_BODY_BYTES);
        let refused =
            read_signed(stream(vec![b"abc", b"def"]), check(&v, b"abcdeX"), &budget).await;
        assert!(
            matches!(refused, Err(Refusal::Signature(SignatureError::Mismatch))),
            "{refused:?}"
        );
        assert_eq!(budget.available(), budget.total());
    }
}
