//! Who may see the dashboard: a browser that logged in with an API key holds a random session
//! token in an HttpOnly, SameSite=Strict cookie; a non-browser client may send the key as
//! `Authorization: Bearer`; and a client holding the key may mint a one-time link (single use,
//! valid one minute) that turns into a cookie session — how a headless browser gets in without
//! the key ever appearing in a URL.
//!
//! A login, a link and the session they open all hold the key that made them (as its digest)
//! and show the merchant that key belongs to in the registry as it is at each request: a key
//! removed from the tenants file (rotated out, or its merchant removed) closes what it opened.
//!
//! The API key itself is never stored or put in a cookie. Tokens are kept in memory only as
//! their SHA-256 digests (a memory dump yields nothing usable), and die with the process:
//! after a restart people log in again.

use crate::tenants::KeyDigest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie that carries a dashboard session token.
pub const COOKIE: &str = "waotp_dashboard";
/// How long a dashboard login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time link may wait to be used.
pub const LINK_TTL: Duration = Duration::from_secs(60);
/// Live tokens of one kind kept at most; beyond it the oldest are dropped, so a flood of logins
/// cannot grow memory without bound.
const MAX_TOKENS: usize = 10_000;

type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// A live token: its expiry and the digest of the API key that made it.
#[derive(Debug)]
struct Grant {
    expires: Instant,
    key: KeyDigest,
}

/// Live tokens of one kind, by digest.
#[derive(Debug, Default)]
struct Tokens(Mutex<HashMap<Digest32, Grant>>);

impl Tokens {
    fn issue(&self, ttl: Duration, key: KeyDigest) -> String {
        let token = new_token();
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, g| g.expires > now);
        if map.len() >= MAX_TOKENS {
            if let Some(oldest) = map.iter().min_by_key(|(_, g)| g.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&token),
            Grant {
                expires: now + ttl,
                key,
            },
        );
        token
    }

    fn valid(&self, token: &str) -> Option<KeyDigest> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&digest(token))
            .filter(|g| g.expires > Instant::now())
            .map(|g| g.key)
    }

    fn take(&self, token: &str) -> Option<KeyDigest> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&digest(token))
            .filter(|g| g.expires > Instant::now())
            .map(|g| g.key)
    }
}

/// Dashboard sessions and one-time links, shared by every worker.
#[derive(Debug, Default)]
pub struct DashboardAccess {
    sessions: Tokens,
    links: Tokens,
}

impl DashboardAccess {
    /// Starts a session opened with the API key of digest `key`; the returned token goes into
    /// the cookie.
    pub fn open_session(&self, key: KeyDigest) -> String {
        self.sessions.issue(SESSION_TTL, key)
    }

    /// The digest of the key that opened a live session.
    pub fn session_key(&self, token: &str) -> Option<KeyDigest> {
        self.sessions.valid(token)
    }

    pub fn close_session(&self, token: &str) {
        self.sessions.take(token);
    }

    /// A token for one `GET /dashboard/once/{token}`, opening a session with the key of
    /// digest `key`.
    pub fn new_link(&self, key: KeyDigest) -> String {
        self.links.issue(LINK_TTL, key)
    }

    /// Uses up a one-time link: its key's digest the first time, while it is fresh; `None`
    /// after.
    pub fn redeem_link(&self, token: &str) -> Option<KeyDigest> {
        self.links.take(token)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The `Set-Cookie` value for a session token; `Secure` when the page was reached over HTTPS
/// (a plain-HTTP deployment on localhost would otherwise lose the cookie).
pub fn session_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_valid_until_closed_and_only_their_own_token_works() {
        let access = DashboardAccess::default();
        let (a, b) = (KeyDigest::of(b"a"), KeyDigest::of(b"b"));
        let token = access.open_session(a);
        assert_eq!(token.len(), 64);
        assert_eq!(access.session_key(&token), Some(a));
        let other = access.open_session(b);
        assert_eq!(access.session_key(&other), Some(b));
        assert_eq!(access.session_key("0000"), None);
        assert_eq!(access.session_key(""), None);
        access.close_session(&token);
        assert_eq!(access.session_key(&token), None);
    }

    #[test]
    fn a_link_works_once_and_is_not_a_session() {
        let access = DashboardAccess::default();
        let a = KeyDigest::of(b"a");
        let link = access.new_link(a);
        assert_eq!(access.session_key(&link), None);
        assert_eq!(access.redeem_link(&link), Some(a));
        assert_eq!(access.redeem_link(&link), None);
    }

    #[test]
    fn cookies_are_read_and_written_with_their_protections() {
        assert_eq!(
            cookie_value("a=1; waotp_dashboard=abc; b=2", COOKIE),
            Some("abc")
        );
        assert_eq!(cookie_value("xwaotp_dashboard=abc", COOKIE), None);
        let c = session_cookie("t", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(session_cookie("t", true).ends_with("; Secure"));
    }
}
