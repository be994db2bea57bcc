//! Readable text for what a simulated bot did: the lines `waotp chat` prints and `waotp test`
//! matches expectations against.

use super::engine::{MessageBody, OutboundMessage};
use super::simulate::Output;

/// Whether an output is something the customer sees in this chat (codes sent to another
/// number, hooks and merchant notifications are not).
pub fn visible_in_chat(output: &Output) -> bool {
    match output {
        Output::Message(_) => true,
        Output::Code {
            to,
            delivered,
            reverse,
            ..
        } => *delivered && !*reverse && to.is_none(),
        Output::Hook { .. } | Output::Notify(_) | Output::Completed(_) => false,
    }
}

/// One output as display text (may span lines).
pub fn describe(output: &Output) -> String {
    match output {
        Output::Message(m) => describe_message(m),
        Output::Code {
            code,
            template,
            to,
            delivered,
            reverse,
        } => {
            let tpl = template.as_deref().unwrap_or("-");
            if *reverse {
                format!("(reverse code {code} returned to the merchant API with a wa.me link)")
            } else if !delivered {
                "(a code was issued but not sent)".to_owned()
            } else if let Some(to) = to {
                format!("(code {code} sent to {to} in authentication template `{tpl}`)")
            } else {
                format!("bot: 🔐 [authentication template `{tpl}`] {code} is your verification code. [Copy code]")
            }
        }
        Output::Hook { name, vars } => {
            let vars = serde_json::to_string(vars).unwrap_or_default();
            format!("(hook `{name}` called with {vars}; answer with /hook {name} {{json}} or /hookerror {name})")
        }
        Output::Notify(event) => format!("(merchant notified: {event})"),
        Output::Completed(outcome) => format!("(session ended: outcome `{outcome}`)"),
    }
}

fn describe_message(m: &OutboundMessage) -> String {
    let mut out = format!("bot: {}", m.body.text());
    match &m.body {
        MessageBody::Text { .. } => {}
        MessageBody::Buttons { buttons, .. } => {
            let b: Vec<String> = buttons
                .iter()
                .map(|b| format!("[{}] {}", b.id, b.title))
                .collect();
            out.push_str(&format!("\n     {}", b.join("   ")));
        }
        MessageBody::List { button, rows, .. } => {
            out.push_str(&format!("\n     ≡ {button}"));
            for r in rows {
                let desc = r
                    .description
                    .as_deref()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default();
                out.push_str(&format!("\n       [{}] {}{desc}", r.id, r.title));
            }
        }
    }
    if let Some(t) = &m.template {
        out.push_str(&format!(
            "\n     (outside 24 h: template `{}` {} {:?})",
            t.name, t.language, t.parameters
        ));
    }
    out
}
