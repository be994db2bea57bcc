//! Slowing down the guessing of API keys, one client at a time.
//!
//! A client is the address its connection comes from (an IPv6 address by its /64, which one
//! machine usually holds whole); forwarded headers are not believed, anyone can write them. Each
//! client may present [`FREE_FAILURES`] wrong keys; every wrong key after that makes it wait
//! before its next key is even looked at — [`FIRST_WAIT`], doubling with each further wrong key
//! up to [`MAX_WAIT`]. While it waits, every key it presents, the right one too, is answered
//! 429 with `Retry-After` (answering the right key would tell a guesser when it found it).
//! Other clients are never affected, so the right key from elsewhere always works. A client is
//! forgotten once [`QUIET`] has passed since its last wrong key.
//!
//! Held in memory only, on purpose: after a restart every client starts afresh, which costs an
//! attacker a restart per ten guesses. The table keeps at most [`MAX_CLIENTS`] clients; beyond
//! it the one quiet the longest is dropped, so no flood of addresses grows it without bound.
//! A request with no key at all is not a guess and is not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong keys a client may present before it has to wait.
pub const FREE_FAILURES: u32 = 10;
/// The wait after the first wrong key beyond the free ones; each further one doubles it.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait: a client that keeps guessing gets four tries an hour.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// A client with no wrong key for this long is forgotten.
pub const QUIET: Duration = Duration::from_secs(30 * 60);
/// Clients tracked at most.
pub const MAX_CLIENTS: usize = 10_000;

/// Who is counted: an IPv4 address, an IPv6 /64, or "no address known".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4([u8; 4]),
    V6([u8; 8]),
    Unknown,
}

impl Client {
    fn of(address: Option<IpAddr>) -> Client {
        match address.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(v4)) => Client::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Client::V6(prefix)
            }
            None => Client::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// The wait imposed after `failures` wrong keys in a row.
fn wait_after(failures: u32) -> Option<Duration> {
    let beyond = failures.checked_sub(FREE_FAILURES + 1)?;
    Some(
        FIRST_WAIT
            .saturating_mul(1u32 << beyond.min(20))
            .min(MAX_WAIT),
    )
}

/// Wrong-key counts by client, shared by every worker.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    clients: Mutex<HashMap<Client, Record>>,
    /// How many clients are tracked, read without the lock: while nobody has presented a wrong
    /// key, a request with the right one takes no lock at all.
    tracked: AtomicUsize,
}

impl AuthThrottle {
    /// `Err(wait)` while the client at `address` must wait before presenting another key.
    pub fn admit(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let client = Client::of(address);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = clients.get(&client) else {
            return Ok(());
        };
        if record.blocked_until > now {
            return Err(record.blocked_until - now);
        }
        if now.duration_since(record.last_failure) >= QUIET {
            clients.remove(&client);
            self.tracked.store(clients.len(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts a wrong key from `address`; returns the wait it now has to serve, if any.
    pub fn failed(&self, address: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let client = Client::of(address);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(&client) && clients.len() >= MAX_CLIENTS {
            clients.retain(|_, r| now.duration_since(r.last_failure) < QUIET);
            if clients.len() >= MAX_CLIENTS {
                if let Some(quietest) = clients
                    .iter()
                    .min_by_key(|(_, r)| r.last_failure)
                    .map(|(c, _)| *c)
                {
                    clients.remove(&quietest);
                }
            }
        }
        let record = clients.entry(client).or_insert(Record {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        });
        if now.duration_since(record.last_failure) >= QUIET {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let wait = wait_after(record.failures);
        if let Some(wait) = wait {
            record.blocked_until = now + wait;
        }
        self.tracked.store(clients.len(), Ordering::Relaxed);
        wait
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn ten_free_wrong_keys_then_waits_that_double_up_to_the_cap() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.admit(v4(1), now), Ok(()));
            assert_eq!(t.failed(v4(1), now), None);
        }
        assert_eq!(t.failed(v4(1), now), Some(Duration::from_secs(1)));
        assert_eq!(t.admit(v4(1), now), Err(Duration::from_secs(1)));
        // Another client is not affected.
        assert_eq!(t.admit(v4(2), now), Ok(()));
        let later = now + Duration::from_secs(1);
        assert_eq!(t.admit(v4(1), later), Ok(()));
        assert_eq!(t.failed(v4(1), later), Some(Duration::from_secs(2)));
        let mut at = later;
        for _ in 0..30 {
            at += MAX_WAIT;
            t.failed(v4(1), at);
        }
        assert_eq!(t.admit(v4(1), at), Err(MAX_WAIT));
        // Forgotten after a quiet spell.
        let quiet = at + QUIET;
        assert_eq!(t.admit(v4(1), quiet), Ok(()));
        assert!(t.is_empty());
        assert_eq!(t.failed(v4(1), quiet), None);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_mapped_ipv4_is_ipv4() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..=FREE_FAILURES {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i as u16);
            t.failed(Some(IpAddr::V6(a)), now);
        }
        let same_64 = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 1, 2, 3);
        assert!(t.admit(Some(IpAddr::V6(same_64)), now).is_err());
        let other_64 = Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 0);
        assert!(t.admit(Some(IpAddr::V6(other_64)), now).is_ok());
        for _ in 0..=FREE_FAILURES {
            t.failed(v4(9), now);
        }
        let mapped = Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped();
        assert!(t.admit(Some(IpAddr::V6(mapped)), now).is_err());
    }

    #[test]
    fn the_table_stays_bounded_however_many_clients_guess() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 500) {
            let at = now + Duration::from_millis(u64::from(i));
            t.failed(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))), at);
        }
        assert_eq!(t.len(), MAX_CLIENTS);
        // The quietest went first; the newest are still counted.
        let newest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + MAX_CLIENTS as u32 + 499));
        let clients = t.clients.lock().expect("lock");
        assert!(clients.contains_key(&Client::of(Some(newest))));
        assert!(!clients.contains_key(&Client::of(Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000))))));
    }
}
