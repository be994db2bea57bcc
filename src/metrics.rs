//! Prometheus metrics: one registry, typed handles, text exposition.
//!
//! Owns metric names and labels; code elsewhere only increments the handles. Labels are
//! `&'static str` so that counting never allocates on the webhook's hot path.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Webhook POSTs by result: accepted, unauthorized, bad_request, too_large, error.
    pub webhook_requests: Family<ResultLabel, Counter>,
    /// Events recorded for the first time, by kind (message type or status).
    pub events_recorded: Family<KindLabel, Counter>,
    /// Events dropped as repeats of one already recorded.
    pub events_deduplicated: Counter,
    /// Items in a webhook body that could not be read and were skipped.
    pub events_skipped: Counter,
    /// Events handed on to the runtime and finished.
    pub events_handled: Counter,
    /// Events recorded but not yet handled.
    pub inbound_pending: Gauge,
    /// Waiters served by one group flush, and how long the flush took.
    pub flush_batch_size: Histogram,
    pub flush_seconds: Histogram,
    /// Dedupe records and old events purged.
    pub records_purged: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("waotp");
        let webhook_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook POST requests by result",
            webhook_requests.clone(),
        );
        let events_recorded = Family::<KindLabel, Counter>::default();
        registry.register(
            "events_recorded",
            "Inbound events recorded for the first time, by kind",
            events_recorded.clone(),
        );
        let events_deduplicated = Counter::default();
        registry.register(
            "events_deduplicated",
            "Inbound events dropped as repeated deliveries",
            events_deduplicated.clone(),
        );
        let events_skipped = Counter::default();
        registry.register(
            "events_skipped",
            "Unreadable items in webhook bodies, acknowledged and skipped",
            events_skipped.clone(),
        );
        let events_handled = Counter::default();
        registry.register(
            "events_handled",
            "Inbound events handled by the runtime",
            events_handled.clone(),
        );
        let inbound_pending = Gauge::default();
        registry.register(
            "inbound_pending",
            "Inbound events recorded and not yet handled",
            inbound_pending.clone(),
        );
        let flush_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_flush_batch_size",
            "Writers made durable by one group flush",
            flush_batch_size.clone(),
        );
        let flush_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "store_flush_seconds",
            "Duration of one group flush",
            flush_seconds.clone(),
        );
        let records_purged = Counter::default();
        registry.register(
            "records_purged",
            "Expired dedupe records and events removed",
            records_purged.clone(),
        );
        Metrics {
            registry,
            webhook_requests,
            events_recorded,
            events_deduplicated,
            events_skipped,
            events_handled,
            inbound_pending,
            flush_batch_size,
            flush_seconds,
            records_purged,
        }
    }

    /// Counts one webhook request by its result.
    pub fn webhook(&self, result: &'static str) {
        self.webhook_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.webhook("accepted");
        m.webhook("accepted");
        m.webhook("unauthorized");
        m.events_deduplicated.inc();
        let text = m.render();
        assert!(
            text.contains("waotp_webhook_requests_total{result=\"accepted\"} 2"),
            "{text}"
        );
        assert!(text.contains("waotp_webhook_requests_total{result=\"unauthorized\"} 1"));
        assert!(text.contains("waotp_events_deduplicated_total 1"));
    }
}
