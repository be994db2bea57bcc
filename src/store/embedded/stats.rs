//! Verification funnel aggregates, kept as sessions progress so that a report never scans
//! sessions: counters per merchant, number and flow per hour, incremented in place.
//!
//! One tree, `stats`:
//! - `c` hour (i64 BE, hours since the Unix epoch) ++ merchant `\x1f` phone number id `\x1f`
//!   flow `\0` metric → count (u64 BE). Counters written before merchants existed have no
//!   merchant and number (`c` hour ++ flow `\0` metric) and are read as the default scope's.
//! - `p` session id → when its latest code was accepted by WhatsApp (ms, i64 BE), kept while the
//!   session runs so that "sent → verified" can be measured
//!
//! Hour first in the key makes a time range one contiguous scan, whatever the flow filter.
//! Latencies are small fixed histograms (one counter per bucket), so medians and p90s of any
//! range come from summing buckets; a quantile is reported as the upper bound of its bucket.

use super::StoreError;
use crate::tenants::{Scope, SCOPE_SEPARATOR};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

const COUNTER: u8 = b'c';
const PENDING: u8 = b'p';

/// Upper bounds (seconds) of the latency buckets. The last one also takes everything slower:
/// a code lives at most 90 minutes, and a day-late delivery is simply "late".
pub const BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

/// What is counted. Each variant is one counter name in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric<'a> {
    Started,
    /// A code message accepted by WhatsApp (resends count again).
    CodeSent,
    CodeDelivered,
    CodeRead,
    /// A correct code (the session's verification succeeded).
    Verified,
    Outcome(&'a str),
    /// A message of the flow that WhatsApp could not deliver, by Graph error code.
    Failure(Option<i64>),
    LimitBreach(&'a str),
    /// Histogram bucket (index into [`BUCKETS`]) of sent → verified.
    VerifyLatency(usize),
    /// Histogram bucket of sent → delivered.
    DeliveryLatency(usize),
}

impl Metric<'_> {
    /// The counter's stored name.
    pub(crate) fn name(&self) -> String {
        match self {
            Metric::Started => "started".into(),
            Metric::CodeSent => "code_sent".into(),
            Metric::CodeDelivered => "code_delivered".into(),
            Metric::CodeRead => "code_read".into(),
            Metric::Verified => "verified".into(),
            Metric::Outcome(o) => format!("outcome:{o}"),
            Metric::Failure(Some(code)) => format!("failure:{code}"),
            Metric::Failure(None) => "failure:none".into(),
            Metric::LimitBreach(r) => format!("limit:{r}"),
            Metric::VerifyLatency(i) => format!("lat_verify:{i:02}"),
            Metric::DeliveryLatency(i) => format!("lat_deliver:{i:02}"),
        }
    }
}

/// The histogram bucket a duration falls in.
pub fn bucket_of(seconds: f64) -> usize {
    BUCKETS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(BUCKETS.len() - 1)
}

/// Hours since the Unix epoch of an instant (rounded down).
pub fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600)
}

/// A latency histogram summed over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Histogram {
    pub counts: [u64; BUCKETS.len()],
}

impl Histogram {
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1); `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The rank of the sample wanted, 1-based; computed in f64 so huge totals cannot overflow.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                return Some(BUCKETS[i]);
            }
        }
        BUCKETS.last().copied()
    }
}

/// Everything counted for one flow (or all) over a range of hours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub started: u64,
    pub code_sent: u64,
    pub code_delivered: u64,
    pub code_read: u64,
    pub verified: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// Failures by Graph error code; `None` when WhatsApp gave none.
    pub failures: BTreeMap<Option<i64>, u64>,
    pub limit_breaches: BTreeMap<String, u64>,
    pub verify_latency: Histogram,
    pub delivery_latency: Histogram,
    /// Sessions started per hour (hour since the epoch → count), hours without any left out.
    pub started_by_hour: BTreeMap<i64, u64>,
}

fn add(map_value: &mut u64, n: u64) {
    *map_value = map_value.saturating_add(n);
}

impl Totals {
    /// Adds `n` of the counter named `metric` (see [`Metric`]) in `hour`.
    pub(crate) fn absorb(&mut self, hour: i64, metric: &str, n: u64) {
        let (kind, arg) = metric.split_once(':').unwrap_or((metric, ""));
        let bucket = || arg.parse::<usize>().ok().filter(|i| *i < BUCKETS.len());
        match kind {
            "started" => {
                add(&mut self.started, n);
                add(self.started_by_hour.entry(hour).or_default(), n);
            }
            "code_sent" => add(&mut self.code_sent, n),
            "code_delivered" => add(&mut self.code_delivered, n),
            "code_read" => add(&mut self.code_read, n),
            "verified" => add(&mut self.verified, n),
            "outcome" => add(self.outcomes.entry(arg.to_owned()).or_default(), n),
            "failure" => add(self.failures.entry(arg.parse().ok()).or_default(), n),
            "limit" => add(self.limit_breaches.entry(arg.to_owned()).or_default(), n),
            "lat_verify" => {
                if let Some(i) = bucket() {
                    add(&mut self.verify_latency.counts[i], n);
                }
            }
            "lat_deliver" => {
                if let Some(i) = bucket() {
                    add(&mut self.delivery_latency.counts[i], n);
                }
            }
            // A counter from a newer version: ignored rather than failing the report.
            _ => {}
        }
    }
}

/// One merchant's counters over a range: all its numbers together, and each number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerchantTotals {
    pub all: Totals,
    /// By phone number id: every number with a counter in the range.
    pub numbers: BTreeMap<String, Totals>,
}

/// Handle to the stats tree.
#[derive(Debug, Clone)]
pub struct StatsStore {
    tree: super::redo::LoggedTree,
}

fn counter_key(hour: i64, scope: &Scope, flow: &str, metric: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(
        12 + scope.merchant.len() + scope.number.len() + flow.len() + metric.len(),
    );
    k.push(COUNTER);
    k.extend_from_slice(&hour.max(0).to_be_bytes());
    let mut sep = [0u8; 4];
    let sep = SCOPE_SEPARATOR.encode_utf8(&mut sep).as_bytes();
    k.extend_from_slice(scope.merchant.as_bytes());
    k.extend_from_slice(sep);
    k.extend_from_slice(scope.number.as_bytes());
    k.extend_from_slice(sep);
    k.extend_from_slice(flow.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

/// One counter as read back.
struct Counter<'a> {
    hour: i64,
    /// Merchant and number; `None` for a counter written before merchants existed.
    scope: Option<(&'a str, &'a str)>,
    flow: &'a str,
    metric: &'a str,
    count: u64,
}

/// Reads a counter's key and value; `None` for a key of another shape.
fn parse_counter<'a>(k: &'a [u8], v: &[u8]) -> Option<Counter<'a>> {
    let hour = i64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    let rest = std::str::from_utf8(&k[9..]).ok()?;
    let (head, metric) = rest.split_once('\0')?;
    let mut parts = head.split(SCOPE_SEPARATOR);
    let (scope, flow) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(flow), None, None, None) => (None, flow),
        (Some(merchant), Some(number), Some(flow), None) => (Some((merchant, number)), flow),
        _ => return None,
    };
    Some(Counter {
        hour,
        scope,
        flow,
        metric,
        count: read_u64(v),
    })
}

fn pending_key(session_id: &str) -> Vec<u8> {
    let mut k = vec![PENDING];
    k.extend_from_slice(session_id.as_bytes());
    k
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

impl StatsStore {
    pub(super) fn open(db: &sled::Db, redo: super::redo::Redo) -> Result<StatsStore, StoreError> {
        Ok(StatsStore {
            tree: super::redo::LoggedTree::open(db, "stats", redo)?,
        })
    }

    /// Adds `n` to a counter of `flow` at `scope` in the hour of `at` (not yet durable: the
    /// caller's group commit covers it).
    pub fn count(
        &self,
        scope: &Scope,
        flow: &str,
        metric: Metric<'_>,
        at: DateTime<Utc>,
        n: u64,
    ) -> Result<(), StoreError> {
        let k = counter_key(hour_of(at), scope, flow, &metric.name());
        // A compare-and-swap loop inside sled: concurrent increments are never lost.
        self.tree.update_and_fetch(k, |old| {
            let sum = old.map_or(0, read_u64).saturating_add(n);
            Some(sum.to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// Remembers when the session's latest code was accepted by WhatsApp.
    pub fn code_sent_at(&self, session_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.tree.put(
            pending_key(session_id),
            &at.timestamp_millis().to_be_bytes(),
        )?;
        Ok(())
    }

    /// When the session's latest code was accepted, if one was.
    pub fn sent_at(&self, session_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .tree
            .get(pending_key(session_id))?
            .and_then(|b| b.as_ref().try_into().ok().map(i64::from_be_bytes))
            .and_then(DateTime::from_timestamp_millis))
    }

    /// Forgets a finished session's code time.
    pub fn session_done(&self, session_id: &str) -> Result<(), StoreError> {
        self.tree.remove(pending_key(session_id))?;
        Ok(())
    }

    /// Calls `each` with every counter of `flow` (every flow when `None`) over the hours
    /// `from_hour` up to, not including, `to_hour`.
    fn scan(
        &self,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
        mut each: impl FnMut(&Counter<'_>),
    ) -> Result<(), StoreError> {
        if to_hour <= from_hour {
            return Ok(());
        }
        let mut start = vec![COUNTER];
        start.extend_from_slice(&from_hour.max(0).to_be_bytes());
        let mut end = vec![COUNTER];
        end.extend_from_slice(&to_hour.max(0).to_be_bytes());
        for item in self.tree.range(start..end) {
            let (k, v) = item?;
            let Some(c) = parse_counter(&k, &v) else {
                continue;
            };
            if flow.is_some_and(|wanted| wanted != c.flow) {
                continue;
            }
            each(&c);
        }
        Ok(())
    }

    /// Sums the counters of `flow` (every flow when `None`) of every merchant over the hours
    /// `from_hour` up to, not including, `to_hour`.
    pub fn query(
        &self,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Totals, StoreError> {
        let mut totals = Totals::default();
        self.scan(flow, from_hour, to_hour, |c| {
            totals.absorb(c.hour, c.metric, c.count)
        })?;
        Ok(totals)
    }

    /// Sums `merchant`'s counters of `flow` (every flow when `None`) over the hours
    /// `from_hour` up to, not including, `to_hour`, in all and per number. Counters written
    /// before merchants existed are `default`'s.
    pub fn query_merchant(
        &self,
        merchant: &str,
        default: &Scope,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<MerchantTotals, StoreError> {
        let mut totals = MerchantTotals::default();
        self.scan(flow, from_hour, to_hour, |c| {
            let (m, number) = c
                .scope
                .unwrap_or((default.merchant.as_str(), default.number.as_str()));
            if m != merchant {
                return;
            }
            totals.all.absorb(c.hour, c.metric, c.count);
            totals
                .numbers
                .entry(number.to_owned())
                .or_default()
                .absorb(c.hour, c.metric, c.count);
        })?;
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: i64, minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(hour * 3600 + minute * 60, 0).expect("valid time")
    }

    fn sc() -> Scope {
        Scope::new("default", "sandbox")
    }

    fn store() -> (tempfile::TempDir, StatsStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("open sled");
        let stats = StatsStore::open(&db, super::super::redo::Redo::none()).expect("open stats");
        (dir, stats)
    }

    #[test]
    fn counts_sum_per_flow_and_hour_range() {
        let (_dir, s) = store();
        s.count(&sc(), "a", Metric::Started, at(100, 5), 1)
            .expect("count");
        s.count(&sc(), "a", Metric::Started, at(100, 59), 2)
            .expect("count");
        s.count(&sc(), "a", Metric::Started, at(101, 0), 4)
            .expect("count");
        s.count(&sc(), "b", Metric::Started, at(100, 1), 8)
            .expect("count");
        s.count(&sc(), "a", Metric::Outcome("verified"), at(100, 7), 1)
            .expect("count");
        s.count(&sc(), "b", Metric::Failure(Some(131026)), at(100, 7), 3)
            .expect("count");
        s.count(&sc(), "b", Metric::Failure(None), at(100, 7), 1)
            .expect("count");
        let a = s.query(Some("a"), 100, 101).expect("query");
        assert_eq!(a.started, 3);
        assert_eq!(a.started_by_hour, BTreeMap::from([(100, 3)]));
        assert_eq!(a.outcomes, BTreeMap::from([("verified".to_owned(), 1)]));
        assert!(a.failures.is_empty());
        let all = s.query(None, 100, 102).expect("query");
        assert_eq!(all.started, 15);
        assert_eq!(all.started_by_hour, BTreeMap::from([(100, 11), (101, 4)]));
        assert_eq!(all.failures, BTreeMap::from([(None, 1), (Some(131026), 3)]));
        assert_eq!(s.query(None, 102, 200).expect("query"), Totals::default());
        assert_eq!(s.query(None, 101, 101).expect("query"), Totals::default());
    }

    #[test]
    fn a_flow_that_prefixes_another_is_not_mixed_up() {
        let (_dir, s) = store();
        s.count(&sc(), "sign", Metric::Started, at(5, 0), 1)
            .expect("count");
        s.count(&sc(), "signup", Metric::Started, at(5, 0), 10)
            .expect("count");
        assert_eq!(s.query(Some("sign"), 5, 6).expect("query").started, 1);
        assert_eq!(s.query(Some("signup"), 5, 6).expect("query").started, 10);
    }

    #[test]
    fn merchants_and_numbers_are_counted_apart_and_old_counters_are_the_defaults() {
        let (_dir, s) = store();
        let a1 = Scope::new("a", "1");
        let a2 = Scope::new("a", "2");
        let b3 = Scope::new("b", "3");
        s.count(&a1, "f", Metric::Started, at(7, 0), 1)
            .expect("count");
        s.count(&a2, "f", Metric::Started, at(7, 0), 2)
            .expect("count");
        s.count(&a2, "g", Metric::Verified, at(7, 0), 4)
            .expect("count");
        s.count(&b3, "f", Metric::Started, at(7, 0), 8)
            .expect("count");
        // As a version without merchants wrote it.
        let mut old = vec![COUNTER];
        old.extend_from_slice(&7i64.to_be_bytes());
        old.extend_from_slice(b"f\0started");
        s.tree.insert(old, &16u64.to_be_bytes()).expect("insert");

        let a = s.query_merchant("a", &b3, None, 7, 8).expect("query");
        assert_eq!((a.all.started, a.all.verified), (3, 4));
        assert_eq!(a.numbers.len(), 2);
        assert_eq!(a.numbers["1"].started, 1);
        assert_eq!((a.numbers["2"].started, a.numbers["2"].verified), (2, 4));
        let a_f = s.query_merchant("a", &b3, Some("f"), 7, 8).expect("query");
        assert_eq!((a_f.all.started, a_f.all.verified), (3, 0));
        // The old counter is the default scope's (here b/3).
        let b = s.query_merchant("b", &b3, None, 7, 8).expect("query");
        assert_eq!(b.all.started, 24);
        assert_eq!(b.numbers.keys().collect::<Vec<_>>(), ["3"]);
        assert_eq!(
            s.query_merchant("c", &b3, None, 7, 8).expect("query"),
            MerchantTotals::default()
        );
        assert_eq!(s.query(None, 7, 8).expect("query").started, 27);
    }

    #[test]
    fn huge_counts_saturate_instead_of_wrapping() {
        let (_dir, s) = store();
        s.count(&sc(), "a", Metric::CodeSent, at(1, 0), u64::MAX - 1)
            .expect("count");
        s.count(&sc(), "a", Metric::CodeSent, at(1, 0), 5)
            .expect("count");
        s.count(&sc(), "a", Metric::CodeSent, at(2, 0), 5)
            .expect("count");
        assert_eq!(s.query(None, 0, 10).expect("query").code_sent, u64::MAX);
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        h.counts[bucket_of(0.3)] += 5; // ≤ 1 s
        h.counts[bucket_of(12.0)] += 4; // ≤ 15 s
        h.counts[bucket_of(1e9)] += 1; // the catch-all
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.9), Some(15.0));
        assert_eq!(h.quantile(1.0), Some(86400.0));
        assert_eq!(bucket_of(1.0), 0);
        assert_eq!(bucket_of(1.5), 1);
    }

    #[test]
    fn code_times_are_kept_until_the_session_is_done() {
        let (_dir, s) = store();
        assert_eq!(s.sent_at("ses_1").expect("read"), None);
        s.code_sent_at("ses_1", at(3, 4)).expect("write");
        assert_eq!(s.sent_at("ses_1").expect("read"), Some(at(3, 4)));
        s.session_done("ses_1").expect("remove");
        assert_eq!(s.sent_at("ses_1").expect("read"), None);
    }
}
