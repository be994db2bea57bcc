//! The dashboard's HTML: a login form, and the page of one merchant with one section per time
//! window (funnels per flow and per number, rates, latencies, top failure reasons, sessions per
//! hour).
//!
//! Server-rendered strings, no JavaScript. Every value from outside (flow ids, outcomes, limit
//! reasons) is escaped; every rate tolerates a zero denominator.

use super::svg::{escape, funnel, percent, seconds, sparkline, thousands, Stage};
use crate::api::stats::{failures, rate, HourRange};
use crate::store::Totals;
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// How many failure reasons a window lists.
const TOP_FAILURES: usize = 8;

/// One time window of the page.
#[derive(Debug)]
pub struct Window {
    /// Short id used in the DOM (`24h`, `7d`).
    pub id: &'static str,
    pub title: &'static str,
    pub range: HourRange,
    /// Every flow together.
    pub all: Totals,
    /// Each loaded flow, by id.
    pub flows: Vec<(String, Totals)>,
    /// Each of the merchant's numbers, by the name shown.
    pub numbers: Vec<(String, Totals)>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:72rem}\
h1{font-size:1.4rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem}\
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem;min-width:9rem}\
.card b{display:block;font-size:1.3rem}.flows{display:flex;flex-wrap:wrap;gap:1rem}\
.flow{border:1px solid #eee;border-radius:6px;padding:.5rem}.flow h3{margin:.2rem 0;font-size:1rem}\
table{border-collapse:collapse}td,th{border-bottom:1px solid #eee;padding:.25rem .6rem;text-align:left}\
.muted{color:#666;font-size:.9rem}";

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    )
}

/// The login form; `message` explains a refused attempt.
pub fn login_page(message: Option<&str>) -> String {
    let mut html = head("waotp dashboard — log in");
    html.push_str("<h1>waotp dashboard</h1>");
    if let Some(m) = message {
        let _ = write!(html, "<p role=\"alert\"><strong>{}</strong></p>", escape(m));
    }
    html.push_str(
        "<form method=\"post\" action=\"/dashboard/login\"><label>API key <input type=\"password\" name=\"key\" autocomplete=\"current-password\" required></label> <button type=\"submit\">Log in</button></form>\
<p class=\"muted\">Use one of the merchant API keys (WAOTP_API_KEYS). The key is not stored: the browser keeps a session cookie for 12 hours.</p></body></html>",
    );
    html
}

fn card(html: &mut String, label: &str, value: &str, note: &str) {
    let _ = write!(
        html,
        "<div class=\"card\">{}<b>{}</b><span class=\"muted\">{}</span></div>",
        escape(label),
        escape(value),
        escape(note)
    );
}

fn stages(t: &Totals) -> [Stage; 5] {
    [
        Stage {
            id: "started",
            label: "Started",
            value: t.started,
        },
        Stage {
            id: "code_sent",
            label: "Code sent",
            value: t.code_sent,
        },
        Stage {
            id: "delivered",
            label: "Delivered",
            value: t.code_delivered,
        },
        Stage {
            id: "read",
            label: "Read",
            value: t.code_read,
        },
        Stage {
            id: "verified",
            label: "Verified",
            value: t.verified,
        },
    ]
}

fn summary(html: &mut String, t: &Totals) {
    html.push_str("<div class=\"cards\">");
    card(html, "Sessions started", &thousands(t.started), "");
    card(
        html,
        "Codes sent",
        &thousands(t.code_sent),
        "accepted by WhatsApp",
    );
    card(
        html,
        "Delivery rate",
        &percent(rate(t.code_delivered, t.code_sent)),
        &format!("{} delivered", thousands(t.code_delivered)),
    );
    card(
        html,
        "Conversion",
        &percent(rate(t.verified, t.started)),
        &format!("{} verified", thousands(t.verified)),
    );
    card(
        html,
        "Sent → verified",
        &seconds(t.verify_latency.quantile(0.5)),
        &format!("median; p90 {}", seconds(t.verify_latency.quantile(0.9))),
    );
    card(
        html,
        "Sent → delivered",
        &seconds(t.delivery_latency.quantile(0.5)),
        &format!("median; p90 {}", seconds(t.delivery_latency.quantile(0.9))),
    );
    html.push_str("</div>");
}

fn counts_line(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, n)| format!("{} {}", escape(k), thousands(*n)))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn failure_table(html: &mut String, t: &Totals) {
    let rows = failures(t);
    if rows.is_empty() {
        html.push_str("<p class=\"muted\">No delivery failures.</p>");
        return;
    }
    html.push_str("<table class=\"failures\"><thead><tr><th>Meta error code</th><th>Messages</th><th>What it means</th></tr></thead><tbody>");
    for (code, n, text) in rows.into_iter().take(TOP_FAILURES) {
        let code = code.map_or_else(|| "—".to_owned(), |c| c.to_string());
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&code),
            thousands(n),
            escape(text)
        );
    }
    html.push_str("</tbody></table>");
}

fn section(html: &mut String, w: &Window) {
    let (from, to) = (
        w.range.start(w.range.from_hour).to_rfc3339(),
        w.range.start(w.range.to_hour).to_rfc3339(),
    );
    let _ = write!(
        html,
        "<section data-window=\"{}\" data-from=\"{}\" data-to=\"{}\"><h2>{}</h2><p class=\"muted\">{} to {} (UTC, whole hours)</p>",
        escape(w.id),
        escape(&from),
        escape(&to),
        escape(w.title),
        escape(&from),
        escape(&to)
    );
    summary(html, &w.all);
    let hourly: Vec<u64> = (w.range.from_hour..w.range.to_hour)
        .map(|h| w.all.started_by_hour.get(&h).copied().unwrap_or(0))
        .collect();
    let busiest = hourly.iter().copied().max().unwrap_or(0);
    let _ = write!(
        html,
        "<h3>Sessions per hour</h3>{}<p class=\"muted\">{} hours, oldest on the left; busiest hour: {} sessions</p>",
        sparkline(w.id, &hourly),
        hourly.len(),
        thousands(busiest)
    );
    html.push_str("<h3>Funnel per flow</h3><div class=\"flows\">");
    for (flow, t) in &w.flows {
        let _ = write!(
            html,
            "<div class=\"flow\"><h3>{}</h3>{}<p class=\"muted\">conversion {} · delivery {}<br>outcomes: {}<br>limit breaches: {}</p></div>",
            escape(flow),
            funnel(flow, w.id, &stages(t)),
            percent(rate(t.verified, t.started)),
            percent(rate(t.code_delivered, t.code_sent)),
            counts_line(&t.outcomes),
            counts_line(&t.limit_breaches),
        );
    }
    if w.flows.is_empty() {
        html.push_str("<p class=\"muted\">No flows are loaded.</p>");
    }
    html.push_str("</div><h3>Funnel per number</h3><table class=\"numbers\"><thead><tr><th>Number</th><th>Started</th><th>Codes sent</th><th>Delivered</th><th>Verified</th><th>Conversion</th><th>Delivery</th></tr></thead><tbody>");
    for (number, t) in &w.numbers {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(number),
            thousands(t.started),
            thousands(t.code_sent),
            thousands(t.code_delivered),
            thousands(t.verified),
            percent(rate(t.verified, t.started)),
            percent(rate(t.code_delivered, t.code_sent)),
        );
    }
    html.push_str("</tbody></table><h3>Top failure reasons</h3>");
    failure_table(html, &w.all);
    html.push_str("</section>");
}

/// What WhatsApp last said about each template: status (with its reason) and quality.
fn template_table(html: &mut String, templates: &[crate::store::TemplateStatus]) {
    html.push_str("<section data-window=\"templates\"><h2>WhatsApp templates</h2>");
    if templates.is_empty() {
        html.push_str("<p class=\"muted\">No template status known yet: set WAOTP_WABA_ID so the server checks them at start, and subscribe the app to template webhooks.</p></section>");
        return;
    }
    html.push_str("<table class=\"templates\"><thead><tr><th>Template</th><th>Language</th><th>Status</th><th>Reason</th><th>Quality</th><th>Since</th></tr></thead><tbody>");
    for t in templates {
        let blocked = if t.blocked_reason().is_some() || t.status == "REJECTED" {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = write!(
            html,
            "<tr{blocked}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.name),
            escape(&t.language),
            escape(&t.status.to_ascii_lowercase()),
            escape(t.reason.as_deref().filter(|r| *r != "NONE").unwrap_or("—")),
            escape(&t.quality.as_deref().unwrap_or("—").to_ascii_lowercase()),
            escape(&t.updated_at.format("%Y-%m-%d %H:%M UTC").to_string()),
        );
    }
    html.push_str("</tbody></table></section>");
}

/// The dashboard page.
pub fn dashboard_page(
    merchant: &str,
    windows: &[Window],
    templates: Option<&[crate::store::TemplateStatus]>,
    generated: DateTime<Utc>,
) -> String {
    let mut html = head("waotp dashboard");
    let _ = write!(
        html,
        "<h1>waotp — verification at a glance</h1><p>Merchant <b data-merchant>{}</b></p><p class=\"muted\">Generated {}. Codes sent, delivered and read count code messages (a resend counts again); verified counts correct codes.</p>\
<form method=\"post\" action=\"/dashboard/logout\"><button type=\"submit\">Log out</button></form>",
        escape(merchant),
        escape(&generated.format("%Y-%m-%d %H:%M UTC").to_string())
    );
    for w in windows {
        section(&mut html, w);
    }
    if let Some(templates) = templates {
        template_table(&mut html, templates);
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(all: Totals, flows: Vec<(String, Totals)>) -> Window {
        Window {
            id: "24h",
            title: "Last 24 hours",
            range: HourRange {
                from_hour: 0,
                to_hour: 24,
            },
            all,
            flows,
            numbers: vec![("+15550001 (1)".into(), Totals::default())],
        }
    }

    #[test]
    fn template_statuses_are_listed_with_their_reason_and_escaped() {
        let status =
            |name: &str, status: &str, reason: Option<&str>| crate::store::TemplateStatus {
                waba: None,
                name: name.into(),
                language: "en".into(),
                template_id: "1".into(),
                status: status.into(),
                reason: reason.map(Into::into),
                quality: Some("YELLOW".into()),
                updated_at: DateTime::default(),
            };
        let page = dashboard_page(
            "default",
            &[],
            Some(&[
                status("cod_order_summary", "PAUSED", Some("NONE")),
                status("<b>x</b>", "REJECTED", Some("INVALID_FORMAT")),
            ]),
            DateTime::default(),
        );
        assert!(page.contains("<tr class=\"bad\"><td>cod_order_summary</td><td>en</td><td>paused</td><td>—</td><td>yellow</td>"));
        assert!(page.contains("<td>rejected</td><td>INVALID_FORMAT</td>"));
        assert!(!page.contains("<b>x</b>"));
        let none = dashboard_page("default", &[], Some(&[]), DateTime::default());
        assert!(none.contains("No template status known yet"));
    }

    #[test]
    fn an_empty_database_renders_zeros_and_dashes() {
        let page = dashboard_page(
            "default",
            &[window(
                Totals::default(),
                vec![("f".into(), Totals::default())],
            )],
            Some(&[]),
            DateTime::default(),
        );
        assert!(
            page.contains(r#"data-flow="f" data-window="24h" data-stage="started" data-value="0""#)
        );
        assert!(page.contains("No delivery failures."));
        assert!(page.contains("—"));
        assert!(!page.contains("NaN"));
    }

    #[test]
    fn hostile_names_and_huge_numbers_are_shown_safely() {
        let mut t = Totals {
            started: u64::MAX,
            verified: u64::MAX,
            ..Totals::default()
        };
        t.outcomes.insert("<img src=x>".into(), 1);
        t.failures.insert(Some(131026), u64::MAX);
        let page = dashboard_page(
            "default",
            &[window(t.clone(), vec![("<script>x</script>".into(), t)])],
            Some(&[]),
            DateTime::default(),
        );
        assert!(!page.contains("<img") && !page.contains("<script"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("18,446,744,073,709,551,615"));
        assert!(page.contains("100.0%"));
        assert!(page.contains("131026"));
    }

    #[test]
    fn the_login_form_posts_the_key_and_escapes_messages() {
        let page = login_page(Some("<no>"));
        assert!(page.contains(r#"action="/dashboard/login""#));
        assert!(page.contains("&lt;no&gt;"));
    }
}
