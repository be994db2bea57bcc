//! The outbox's view of the tenants registry: for each number, where its messages go (a Graph
//! client with that number's token, or the sandbox recorder for a number without one), its own
//! send rate limit and its own share of parallel sends; for each merchant, the client that signs
//! its callbacks and hooks with the merchant's secret.
//!
//! Built from the registry and rebuilt when it changes: at once when told
//! ([`Senders::on_tenants_changed`]), and otherwise when a send finds the registry swapped. A
//! number whose token and rate did not change keeps its limiter, so a reload never hands out a
//! fresh burst. Nothing here must survive a restart: pauses and queue positions are in the store.
//! It never logs tokens or secrets.

use crate::merchant::MerchantClient;
use crate::tenants::{Number, Scope, Tenants, TenantsHandle};
use crate::whatsapp::{GraphApi, GraphClient, GraphSetupError};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

/// Highest send rate a number may have (Meta's top throughput tier).
pub const MAX_SENDS_PER_SECOND: u32 = 1000;
/// Recipients of one number served at once (each one's entries go one after another).
const PARALLEL_PER_NUMBER: usize = 32;
/// Recipients of one number taken from the queue at once, served or waiting for a place.
/// Waiting in memory, they cost a pass nothing; the rest of a long queue stays on disk.
const TAKEN_PER_NUMBER: usize = 8 * PARALLEL_PER_NUMBER;

/// A token bucket: `per_second` tokens a second, holding at most `per_second` (one second's
/// worth), full at the start. Over any span of `t` seconds it lets through at most
/// `per_second × (1 + t)` sends.
#[derive(Debug)]
pub(super) struct RateLimit {
    per_second: f64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    pub(super) fn new(per_second: u32) -> RateLimit {
        let per_second = f64::from(per_second.clamp(1, MAX_SENDS_PER_SECOND));
        RateLimit {
            per_second,
            state: Mutex::new((per_second, tokio::time::Instant::now())),
        }
    }

    pub(super) async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = tokio::time::Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_second)
                    .min(self.per_second);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Where one number's WhatsApp messages go.
#[derive(Debug)]
pub(super) enum Transport {
    /// No token: sandbox mode, recorded and not sent.
    Sandbox,
    Graph(GraphClient),
}

/// One configured number, as the outbox sends from it.
#[derive(Debug)]
pub(super) struct Line {
    pub(super) transport: Transport,
    /// Meta's per-number throughput: a busy number never spends another's budget.
    pub(super) rate: RateLimit,
    /// Recipients of this number being served: a number held back by its own rate limit
    /// never takes the places of another's.
    pub(super) parallel: Arc<Semaphore>,
    /// Recipients of this number taken from the queue (served or waiting for `parallel`).
    pub(super) taken: Arc<Semaphore>,
    /// What the line was built from, to tell whether a reload changed it.
    token: Option<SecretString>,
    sends_per_second: u32,
}

impl Line {
    fn build(graph: &GraphApi, number: &Number) -> Result<Line, GraphSetupError> {
        let transport = match &number.access_token {
            Some(token) => Transport::Graph(graph.client(&number.phone_number_id, token.clone())?),
            None => Transport::Sandbox,
        };
        Ok(Line {
            transport,
            rate: RateLimit::new(number.sends_per_second),
            parallel: Arc::new(Semaphore::new(PARALLEL_PER_NUMBER)),
            taken: Arc::new(Semaphore::new(TAKEN_PER_NUMBER)),
            token: number.access_token.clone(),
            sends_per_second: number.sends_per_second,
        })
    }

    /// Whether `number` is still what this line sends as.
    fn serves(&self, number: &Number) -> bool {
        let same_token = match (&self.token, &number.access_token) {
            (None, None) => true,
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        };
        same_token && self.sends_per_second == number.sends_per_second
    }
}

/// Why an entry's number cannot send.
#[derive(Debug)]
pub(super) enum NoLine {
    /// The number (or its merchant) is no longer configured.
    Removed,
    /// Configured, but no client could be built for it (an operator problem).
    Broken(String),
}

/// Everything built from one registry.
#[derive(Debug)]
struct Built {
    /// The registry it was built from, when known to be the handle's (see `current`).
    from: Option<Arc<Tenants>>,
    lines: HashMap<Scope, Arc<Line>>,
    broken: HashMap<Scope, String>,
    merchants: HashMap<String, MerchantClient>,
    /// The scope of entries written before scopes were stored.
    default_scope: Scope,
}

/// The lines of every number and the signing clients of every merchant.
#[derive(Debug)]
pub(super) struct Senders {
    tenants: TenantsHandle,
    graph: GraphApi,
    merchant: MerchantClient,
    built: RwLock<Arc<Built>>,
    /// Places for entries whose number is gone (callbacks still go to their merchant): served
    /// and taken.
    pub(super) orphans: (Arc<Semaphore>, Arc<Semaphore>),
}

impl Senders {
    /// Builds every number's line; a number no client can be built for is refused here, at
    /// start.
    pub(super) fn new(
        tenants: TenantsHandle,
        graph: GraphApi,
        merchant: MerchantClient,
    ) -> Result<Senders, GraphSetupError> {
        let current = tenants.current();
        for number in current.merchants().iter().flat_map(|m| m.numbers.iter()) {
            if let Some(token) = &number.access_token {
                graph.client(&number.phone_number_id, token.clone())?;
            }
        }
        let built = build(&graph, &merchant, &current, None, Some(current.clone()));
        Ok(Senders {
            tenants,
            graph,
            merchant,
            built: RwLock::new(Arc::new(built)),
            orphans: (
                Arc::new(Semaphore::new(PARALLEL_PER_NUMBER)),
                Arc::new(Semaphore::new(TAKEN_PER_NUMBER)),
            ),
        })
    }

    /// Rebuilds the lines from `tenants` (the registry a reload just installed): new numbers get
    /// a line, removed ones lose theirs, changed ones (token, rate) get a new one.
    pub(super) fn on_tenants_changed(&self, tenants: &Tenants) {
        let current = self.tenants.current();
        let from = std::ptr::eq(Arc::as_ptr(&current), tenants).then_some(current);
        self.rebuild(tenants, from);
    }

    fn rebuild(&self, tenants: &Tenants, from: Option<Arc<Tenants>>) -> Arc<Built> {
        let mut slot = self.built.write().unwrap_or_else(|p| p.into_inner());
        let built = Arc::new(build(
            &self.graph,
            &self.merchant,
            tenants,
            Some(&slot),
            from,
        ));
        for (scope, reason) in &built.broken {
            tracing::error!(scope = %scope, error = %reason, "OPERATOR ALERT: this number cannot send");
        }
        *slot = built.clone();
        built
    }

    /// What was built from the registry in force now.
    fn current(&self) -> Arc<Built> {
        let tenants = self.tenants.current();
        let built = self.built.read().unwrap_or_else(|p| p.into_inner()).clone();
        match &built.from {
            Some(from) if Arc::ptr_eq(from, &tenants) => built,
            _ => self.rebuild(&tenants, Some(tenants.clone())),
        }
    }

    /// The scope of entries written before scopes were stored.
    pub(super) fn default_scope(&self) -> Scope {
        self.current().default_scope.clone()
    }

    /// The line of `scope`'s number.
    pub(super) fn line(&self, scope: &Scope) -> Result<Arc<Line>, NoLine> {
        let built = self.current();
        if let Some(line) = built.lines.get(scope) {
            return Ok(line.clone());
        }
        match built.broken.get(scope) {
            Some(reason) => Err(NoLine::Broken(reason.clone())),
            None => Err(NoLine::Removed),
        }
    }

    /// The client signing `merchant`'s calls, if the merchant is still configured.
    pub(super) fn merchant(&self, merchant: &str) -> Option<MerchantClient> {
        self.current().merchants.get(merchant).cloned()
    }
}

fn build(
    graph: &GraphApi,
    merchant: &MerchantClient,
    tenants: &Tenants,
    before: Option<&Built>,
    from: Option<Arc<Tenants>>,
) -> Built {
    let mut lines = HashMap::new();
    let mut broken = HashMap::new();
    let mut merchants = HashMap::new();
    for m in tenants.merchants() {
        merchants.insert(
            m.id.clone(),
            merchant.with_secret(m.callback_secret.as_ref()),
        );
        for number in &m.numbers {
            let scope = m.scope(number);
            let kept = before
                .and_then(|b| b.lines.get(&scope))
                .filter(|line| line.serves(number));
            match kept {
                Some(line) => {
                    lines.insert(scope, line.clone());
                }
                None => match Line::build(graph, number) {
                    Ok(line) => {
                        lines.insert(scope, Arc::new(line));
                    }
                    Err(e) => {
                        broken.insert(scope, e.to_string());
                    }
                },
            }
        }
    }
    Built {
        from,
        lines,
        broken,
        merchants,
        default_scope: tenants.default_scope(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{FlowSource, Merchant};
    use std::time::Duration as StdDuration;

    fn number(id: &str, token: Option<&str>, rate: u32) -> Number {
        Number {
            access_token: token.map(SecretString::from),
            sends_per_second: rate,
            ..Number::new(id)
        }
    }

    fn tenants(numbers: Vec<Number>) -> Tenants {
        Tenants::new(vec![Merchant::new(
            "m",
            FlowSource::Dir("flows".into()),
            numbers,
        )])
        .expect("tenants")
    }

    fn senders(handle: &TenantsHandle) -> Senders {
        Senders::new(
            handle.clone(),
            GraphApi::new("http://127.0.0.1:9/v23.0", Default::default()).expect("graph"),
            MerchantClient::new(None, StdDuration::from_secs(1)).expect("merchant"),
        )
        .expect("senders")
    }

    #[test]
    fn a_reload_keeps_unchanged_lines_and_drops_removed_numbers() {
        let handle = TenantsHandle::new(tenants(vec![
            number("1", Some("t1"), 80),
            number("2", None, 80),
        ]));
        let senders = senders(&handle);
        let one = senders.line(&Scope::new("m", "1")).expect("line 1");
        assert!(matches!(one.transport, Transport::Graph(_)));
        let two = senders.line(&Scope::new("m", "2")).expect("line 2");
        assert!(matches!(two.transport, Transport::Sandbox));

        handle.replace(tenants(vec![
            number("1", Some("t1"), 80),
            number("3", Some("t3"), 80),
        ]));
        senders.on_tenants_changed(&handle.current());
        let again = senders.line(&Scope::new("m", "1")).expect("line 1");
        assert!(
            Arc::ptr_eq(&one, &again),
            "an unchanged number keeps its limiter"
        );
        assert!(matches!(
            senders.line(&Scope::new("m", "2")),
            Err(NoLine::Removed)
        ));
        assert!(senders.line(&Scope::new("m", "3")).is_ok());
    }

    #[test]
    fn a_swapped_registry_is_seen_without_being_told_and_a_new_token_gets_a_new_line() {
        let handle = TenantsHandle::new(tenants(vec![number("1", Some("old"), 80)]));
        let senders = senders(&handle);
        let before = senders.line(&Scope::new("m", "1")).expect("line");
        handle.replace(tenants(vec![number("1", Some("new"), 80)]));
        let after = senders.line(&Scope::new("m", "1")).expect("line");
        assert!(!Arc::ptr_eq(&before, &after));
        handle.replace(tenants(vec![number("1", Some("new"), 120)]));
        let faster = senders.line(&Scope::new("m", "1")).expect("line");
        assert!(!Arc::ptr_eq(&after, &faster));
        assert_eq!(faster.sends_per_second, 120);
    }

    #[test]
    fn a_number_no_client_can_be_built_for_is_refused_at_start() {
        let handle = TenantsHandle::new(tenants(vec![number("12/../34", Some("t"), 80)]));
        let refused = Senders::new(
            handle,
            GraphApi::new("http://127.0.0.1:9/v23.0", Default::default()).expect("graph"),
            MerchantClient::new(None, StdDuration::from_secs(1)).expect("merchant"),
        );
        assert!(matches!(refused, Err(GraphSetupError::PhoneNumberId)));
    }
}
