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
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabel {
    pub engine: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabel {
    pub flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub flow: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OtpLabel {
    pub flow: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboundLabel {
    pub status: &'static str,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabel {
    pub template: String,
    pub code: String,
}

/// Every metric the server exports.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateStateLabel {
    pub template: String,
    pub language: String,
    /// A status (`approved`, `paused`, …) or a quality score (`green`, `yellow`, …).
    pub state: String,
    /// The WhatsApp Business Account of the template; empty (so absent) when unknown.
    pub waba: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Webhook POSTs by result: accepted, unauthorized, bad_request, too_large, timeout,
    /// overloaded (the budget for unverified bodies was spent), error.
    pub webhook_requests: Family<ResultLabel, Counter>,
    /// Events recorded for the first time, by kind (message type or status).
    pub events_recorded: Family<KindLabel, Counter>,
    /// Events dropped as repeats of one already recorded.
    pub events_deduplicated: Counter,
    /// Items in a webhook body that could not be read and were skipped.
    pub events_skipped: Counter,
    /// Events addressed to a phone number the deployment does not serve (no merchant has it),
    /// acknowledged and ignored.
    pub events_other_number: Counter,
    /// Events handed on to the runtime and finished.
    pub events_handled: Counter,
    /// Events recorded but not yet handled.
    pub inbound_pending: Gauge,
    /// Waiters served by one group flush, and how long the flush took.
    pub flush_batch_size: Histogram,
    pub flush_seconds: Histogram,
    /// Dedupe records and old events purged.
    pub records_purged: Counter,
    pub sessions_started: Family<FlowLabel, Counter>,
    pub sessions_completed: Family<OutcomeLabel, Counter>,
    /// OTPs issued / verified / failed / expired / locked, by flow.
    pub otps: Family<OtpLabel, Counter>,
    /// OTP limit breaches by reason.
    pub limit_breaches: Family<ReasonLabel, Counter>,
    /// Outbound messages by status (accepted, sent, delivered, read, failed, retried) and Graph
    /// error code.
    pub outbound: Family<OutboundLabel, Counter>,
    /// Seconds from sent to delivered.
    pub delivery_latency: Histogram,
    pub outbox_depth: Gauge,
    /// Outbox entries this instance dropped unsent because their claim had passed to another
    /// sender.
    pub outbox_claims_lost: Counter,
    pub timers_due: Gauge,
    /// Seconds one session step takes, flush included.
    pub step_seconds: Histogram,
    /// Merchant callbacks (`session.*` events) sent, and those not accepted.
    pub callback_attempts: Counter,
    pub callback_failures: Counter,
    /// Flow hook calls made, and those that failed (the flow took its error branch).
    pub hook_attempts: Counter,
    pub hook_failures: Counter,
    /// Token, permission or template problems reported by the Graph API.
    pub operator_alerts: Counter,
    /// Sends refused because of the template itself (Meta's 132xxx codes), by template and code.
    pub template_errors: Family<TemplateLabel, Counter>,
    /// 1 for each template's current WhatsApp status, 0 for its earlier ones.
    pub template_status: Family<TemplateStateLabel, Gauge>,
    /// 1 for each template's current quality score, 0 for its earlier ones.
    pub template_quality: Family<TemplateStateLabel, Gauge>,
    /// 1 for the storage engine in use (`embedded` or `postgres`).
    pub storage_engine: Family<EngineLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("waotp");
        // `waotp_build_info{version} 1`: which build is running, for joins and upgrade graphs.
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running build of waotp", build_info);
        let storage_engine = Family::<EngineLabel, Gauge>::default();
        registry.register(
            "storage_engine",
            "The storage engine in use (1 for its label)",
            storage_engine.clone(),
        );
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
        let events_other_number = Counter::default();
        registry.register(
            "events_other_number",
            "Inbound events addressed to a phone number no merchant of the deployment has, acknowledged and ignored",
            events_other_number.clone(),
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
        registry.register_with_unit(
            "store_flush",
            "Duration of one group flush",
            Unit::Seconds,
            flush_seconds.clone(),
        );
        let records_purged = Counter::default();
        registry.register(
            "records_purged",
            "Expired dedupe records and events removed",
            records_purged.clone(),
        );
        let sessions_started = Family::<FlowLabel, Counter>::default();
        registry.register(
            "sessions_started",
            "Sessions started, by flow",
            sessions_started.clone(),
        );
        let sessions_completed = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sessions_completed",
            "Sessions completed, by flow and outcome",
            sessions_completed.clone(),
        );
        let otps = Family::<OtpLabel, Counter>::default();
        registry.register("otps", "OTP codes by flow and result", otps.clone());
        let limit_breaches = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "otp_limit_breaches",
            "OTP limit breaches by reason",
            limit_breaches.clone(),
        );
        let outbound = Family::<OutboundLabel, Counter>::default();
        registry.register(
            "outbound_messages",
            "Outbound messages by status and Graph error code",
            outbound.clone(),
        );
        let delivery_latency = Histogram::new(exponential_buckets(0.1, 2.0, 14));
        registry.register_with_unit(
            "delivery_latency",
            "Time from sent to delivered",
            Unit::Seconds,
            delivery_latency.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Outbox entries waiting to be sent",
            outbox_depth.clone(),
        );
        let outbox_claims_lost = Counter::default();
        registry.register(
            "outbox_claims_lost",
            "Outbox entries dropped unsent because their claim had passed to another sender",
            outbox_claims_lost.clone(),
        );
        let timers_due = Gauge::default();
        registry.register(
            "timers_due",
            "Session timers due and not yet fired (the timer backlog)",
            timers_due.clone(),
        );
        let step_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 14));
        registry.register_with_unit(
            "step",
            "Duration of one session step",
            Unit::Seconds,
            step_seconds.clone(),
        );
        let callback_attempts = Counter::default();
        registry.register(
            "callback_attempts",
            "Merchant callbacks sent (hooks are counted apart)",
            callback_attempts.clone(),
        );
        let callback_failures = Counter::default();
        registry.register(
            "callback_failures",
            "Merchant callbacks not accepted (hooks are counted apart)",
            callback_failures.clone(),
        );
        let hook_attempts = Counter::default();
        registry.register(
            "hook_attempts",
            "Flow hook calls made to the merchant",
            hook_attempts.clone(),
        );
        let hook_failures = Counter::default();
        registry.register(
            "hook_failures",
            "Flow hook calls that failed",
            hook_failures.clone(),
        );
        let operator_alerts = Counter::default();
        registry.register(
            "operator_alerts",
            "Graph API token, permission or template problems needing an operator",
            operator_alerts.clone(),
        );
        let template_errors = Family::<TemplateLabel, Counter>::default();
        registry.register(
            "template_errors",
            "Sends refused because of the template itself, by template and Meta error code",
            template_errors.clone(),
        );
        let template_status = Family::<TemplateStateLabel, Gauge>::default();
        registry.register(
            "template_status",
            "1 for the current WhatsApp status of each template and language (0 for earlier ones)",
            template_status.clone(),
        );
        let template_quality = Family::<TemplateStateLabel, Gauge>::default();
        registry.register(
            "template_quality",
            "1 for the current WhatsApp quality score of each template and language (0 for earlier ones)",
            template_quality.clone(),
        );
        Metrics {
            template_status,
            template_quality,
            sessions_started,
            sessions_completed,
            otps,
            limit_breaches,
            outbound,
            delivery_latency,
            outbox_depth,
            outbox_claims_lost,
            storage_engine,
            timers_due,
            step_seconds,
            callback_attempts,
            callback_failures,
            hook_attempts,
            hook_failures,
            operator_alerts,
            template_errors,
            registry,
            webhook_requests,
            events_recorded,
            events_deduplicated,
            events_skipped,
            events_other_number,
            events_handled,
            inbound_pending,
            flush_batch_size,
            flush_seconds,
            records_purged,
        }
    }

    /// Sets a template's current status (or quality score, with `quality`) to 1 and the one it
    /// replaces to 0.
    pub fn template_state(
        &self,
        quality: bool,
        waba: Option<&str>,
        template: &str,
        language: &str,
        state: &str,
        previous: Option<&str>,
    ) {
        let family = if quality {
            &self.template_quality
        } else {
            &self.template_status
        };
        let label = |state: &str| TemplateStateLabel {
            template: template.to_owned(),
            language: language.to_owned(),
            state: state.to_ascii_lowercase(),
            waba: waba.unwrap_or_default().to_owned(),
        };
        if let Some(previous) = previous.filter(|p| !p.eq_ignore_ascii_case(state)) {
            family.get_or_create(&label(previous)).set(0);
        }
        family.get_or_create(&label(state)).set(1);
    }

    /// Counts one webhook request by its result.
    pub fn webhook(&self, result: &'static str) {
        self.webhook_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn otp(&self, result: &'static str, flow: &str) {
        self.otps
            .get_or_create(&OtpLabel {
                flow: flow.to_owned(),
                result,
            })
            .inc();
    }

    pub fn limit_breach(&self, reason: &'static str) {
        self.limit_breaches
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn session_started(&self, flow: &str) {
        self.sessions_started
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .inc();
    }

    pub fn session_completed(&self, flow: &str, outcome: &str) {
        self.sessions_completed
            .get_or_create(&OutcomeLabel {
                flow: flow.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn outbound_message(&self, status: &'static str, code: Option<i64>) {
        self.outbound
            .get_or_create(&OutboundLabel {
                status,
                code: code.map(|c| c.to_string()).unwrap_or_default(),
            })
            .inc();
    }

    /// A send refused because of its template (never on the webhook's hot path).
    pub fn template_error(&self, template: &str, code: Option<i64>) {
        self.template_errors
            .get_or_create(&TemplateLabel {
                template: template.to_owned(),
                code: code.map(|c| c.to_string()).unwrap_or_default(),
            })
            .inc();
    }

    /// Names the storage engine in use (`waotp_storage_engine{engine} 1`).
    pub fn storage_engine(&self, engine: &'static str) {
        self.storage_engine
            .get_or_create(&EngineLabel { engine })
            .set(1);
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
