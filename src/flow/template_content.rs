//! A flow's templates as WhatsApp registers them: for every template and language, the body of
//! Meta's `POST /{WABA-ID}/message_templates` (name, language, category, components with
//! examples), and the text a customer would see.
//!
//! A template's content is said once, in messages: its `body` (and `header`, `footer`) name a
//! `[messages.ID]` entry, every language of the body message is a language of the template, and
//! each `{{var}}` placeholder becomes the next positional parameter `{{1}}`, `{{2}}`, …, in order
//! of appearance — the order in which waotp sends the parameters. Authentication templates have
//! WhatsApp's fixed content (a code, an optional security recommendation and expiry footer, and
//! a copy-code or autofill button).
//!
//! Pure: reads a parsed [`FlowFile`], never the network. The validator (`validate::templates`)
//! holds every template to WhatsApp's published rules before anything here runs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::located::Located;
use super::model::{FlowFile, LocalText, Template, TemplateCategory};
use super::render::{placeholders, render};

/// Longest template body WhatsApp accepts (characters, placeholders counted as written).
pub const MAX_BODY: usize = 1024;
/// Longest text header and footer.
pub const MAX_HEADER: usize = 60;
/// Longest footer.
pub const MAX_FOOTER: usize = 60;
/// Longest button text.
pub const MAX_BUTTON_TEXT: usize = 25;
/// Most buttons of one template (quick replies and URL buttons together).
pub const MAX_TEMPLATE_BUTTONS: usize = 10;
/// Most URL buttons of one template.
pub const MAX_URL_BUTTONS: usize = 2;
/// Longest button URL.
pub const MAX_URL: usize = 2000;
/// Longest template name.
pub const MAX_NAME: usize = 512;
/// Range of an authentication template's `code_expiration_minutes`.
pub const CODE_EXPIRATION_MINUTES: std::ops::RangeInclusive<u32> = 1..=90;

/// One template in one language, as WhatsApp registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSpec {
    /// The flow it belongs to.
    pub flow: String,
    /// Its key in the flow file (`[templates.KEY]`).
    pub key: String,
    /// Name registered with WhatsApp.
    pub name: String,
    /// Language code.
    pub language: String,
    /// `AUTHENTICATION`, `UTILITY` or `MARKETING`.
    pub category: &'static str,
    /// Meta's `components` array; `None` when the flow file does not give the content.
    pub components: Option<Value>,
}

impl TemplateSpec {
    /// The body of `POST /{WABA-ID}/message_templates`; `None` without content.
    pub fn create_body(&self) -> Option<Value> {
        let components = self.components.as_ref()?;
        Some(json!({
            "name": self.name,
            "language": self.language,
            "category": self.category,
            "components": components,
        }))
    }
}

/// Meta's spelling of a category.
pub fn category_name(c: TemplateCategory) -> &'static str {
    match c {
        TemplateCategory::Authentication => "AUTHENTICATION",
        TemplateCategory::Utility => "UTILITY",
        TemplateCategory::Marketing => "MARKETING",
    }
}

/// Whether the flow file gives what WhatsApp needs to register `tpl`: a body, or the fixed
/// content of an authentication template.
pub fn has_content(tpl: &Template) -> bool {
    tpl.body.is_some() || tpl.category.get() == &TemplateCategory::Authentication
}

/// The template's languages: its body message's languages, else `languages`, else its one
/// `language` (or the flow's default language).
pub fn languages(file: &FlowFile, tpl: &Template) -> Vec<String> {
    if let Some(texts) = tpl
        .body
        .as_ref()
        .and_then(|b| file.messages.get(b.as_str()))
    {
        return texts.keys().cloned().collect();
    }
    if !tpl.languages.is_empty() {
        return tpl
            .languages
            .iter()
            .map(|l| l.as_str().to_owned())
            .collect();
    }
    vec![fallback_language(file, tpl).to_owned()]
}

fn fallback_language<'a>(file: &'a FlowFile, tpl: &'a Template) -> &'a str {
    tpl.language
        .as_ref()
        .map_or_else(|| file.default_language(), |l| l.as_str())
}

/// The language a send in `session_language` uses: that language when the template has it,
/// else the template's `language` (or the flow's default language).
pub fn send_language(file: &FlowFile, tpl: &Template, session_language: &str) -> String {
    let all = languages(file, tpl);
    if all.iter().any(|l| l == session_language) {
        return session_language.to_owned();
    }
    let fallback = fallback_language(file, tpl);
    if all.iter().any(|l| l == fallback) || all.is_empty() {
        return fallback.to_owned();
    }
    all.first().cloned().unwrap_or_else(|| fallback.to_owned())
}

/// `text` with every `{{var}}` replaced by `{{1}}`, `{{2}}`, … in order, and the variables in
/// that order.
pub fn positional(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut names = Vec::new();
    let mut from = 0;
    for (offset, name) in placeholders(text) {
        out.push_str(text.get(from..offset).unwrap_or_default());
        names.push(name.to_owned());
        out.push_str(&format!("{{{{{}}}}}", names.len()));
        let close = text
            .get(offset..)
            .and_then(|t| t.find("}}"))
            .map_or(text.len(), |c| offset + c + 2);
        from = close;
    }
    out.push_str(text.get(from..).unwrap_or_default());
    (out, names)
}

/// The variables a template's body sends, in order (from its default-language text).
pub fn body_vars(file: &FlowFile, tpl: &Template) -> Option<Vec<String>> {
    let texts = file.messages.get(tpl.body.as_ref()?.as_str())?;
    let text = texts
        .get(fallback_language(file, tpl))
        .or_else(|| texts.values().next())?;
    Some(positional(text.as_str()).1)
}

/// Fills in the `parameters` of every template given by a `body` and written without them, so
/// that the engine sends exactly the body's placeholders, in order.
pub fn fill_parameters(file: &mut FlowFile) {
    let mut filled = Vec::new();
    for (key, tpl) in &file.templates {
        if tpl.parameters.is_empty() {
            if let Some(vars) = body_vars(file, tpl) {
                filled.push((key.clone(), vars));
            }
        }
    }
    for (key, vars) in filled {
        if let Some(tpl) = file.templates.get_mut(&key) {
            let span = tpl.body.as_ref().map_or(0..0, |b| b.span());
            tpl.parameters = vars
                .into_iter()
                .map(|v| super::located::Located::new(span.clone(), format!("{{{{{v}}}}}")))
                .collect();
        }
    }
}

/// The example value of `var` for `tpl`: the template's `examples`, else the variable's
/// `example`.
pub fn example<'a>(file: &'a FlowFile, tpl: &'a Template, var: &str) -> Option<&'a str> {
    tpl.examples
        .get(var)
        .or_else(|| file.vars.get(var).and_then(|v| v.example.as_ref()))
        .map(|e| e.as_str())
}

/// The title of the choice a quick reply stands for, from the first state sending `key`, with
/// every language it is written in.
pub fn quick_reply_choice_title<'a>(
    file: &'a FlowFile,
    key: &str,
    choice: &str,
) -> Option<&'a Located<LocalText>> {
    file.states
        .values()
        .filter(|s| {
            [&s.template, &s.reminder_template]
                .into_iter()
                .flatten()
                .any(|t| t.as_str() == key)
        })
        .find_map(|s| {
            s.buttons
                .iter()
                .map(|b| (&b.id, &b.title))
                .chain(
                    s.list
                        .iter()
                        .flat_map(|l| &l.rows)
                        .map(|r| (&r.id, &r.title)),
                )
                .find(|(id, _)| id.as_str() == choice)
                .map(|(_, title)| title)
        })
}

/// The title of the choice a quick reply stands for, in `language` (else the flow's default).
pub fn quick_reply_title<'a>(
    file: &'a FlowFile,
    key: &str,
    choice: &str,
    language: &str,
) -> Option<&'a str> {
    let default = file.default_language();
    quick_reply_choice_title(file, key, choice).map(|t| t.in_language(language, default))
}

fn text_in<'a>(file: &'a FlowFile, message: Option<&str>, language: &str) -> Option<&'a str> {
    let texts = file.messages.get(message?)?;
    texts.get(language).map(|t| t.as_str())
}

/// Every template of `file` in every language, in key then language order.
pub fn specs(file: &FlowFile) -> Vec<TemplateSpec> {
    let mut out = Vec::new();
    for (key, tpl) in &file.templates {
        for language in languages(file, tpl) {
            out.push(TemplateSpec {
                flow: file.id.as_str().to_owned(),
                key: key.clone(),
                name: tpl.name.as_str().to_owned(),
                category: category_name(*tpl.category.get()),
                components: has_content(tpl).then(|| components(file, key, tpl, &language)),
                language,
            });
        }
    }
    out
}

fn components(file: &FlowFile, key: &str, tpl: &Template, language: &str) -> Value {
    if tpl.category.get() == &TemplateCategory::Authentication {
        return authentication_components(tpl);
    }
    let mut out = Vec::new();
    let examples = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .map(|n| example(file, tpl, n).unwrap_or_default().to_owned())
            .collect()
    };
    let header = text_in(file, tpl.header.as_ref().map(|h| h.as_str()), language);
    if let Some(text) = header {
        out.push(json!({ "type": "HEADER", "format": "TEXT", "text": text }));
    }
    let body = text_in(file, tpl.body.as_ref().map(|b| b.as_str()), language);
    if let Some(text) = body {
        let (text, names) = positional(text);
        let mut c = json!({ "type": "BODY", "text": text });
        if !names.is_empty() {
            c["example"] = json!({ "body_text": [examples(&names)] });
        }
        out.push(c);
    }
    if let Some(text) = text_in(file, tpl.footer.as_ref().map(|f| f.as_str()), language) {
        out.push(json!({ "type": "FOOTER", "text": text }));
    }
    let mut buttons = Vec::new();
    for q in &tpl.quick_replies {
        let title = quick_reply_title(file, key, q.as_str(), language).unwrap_or(q.as_str());
        buttons.push(json!({ "type": "QUICK_REPLY", "text": title }));
    }
    for b in &tpl.url_buttons {
        buttons.push(json!({ "type": "URL", "text": b.title.as_str(), "url": b.url.as_str() }));
    }
    if !buttons.is_empty() {
        out.push(json!({ "type": "BUTTONS", "buttons": buttons }));
    }
    Value::Array(out)
}

fn authentication_components(tpl: &Template) -> Value {
    let mut body = json!({ "type": "BODY" });
    if let Some(add) = &tpl.add_security_recommendation {
        body["add_security_recommendation"] = json!(add.get());
    }
    let mut out = vec![body];
    if let Some(minutes) = &tpl.code_expiration_minutes {
        out.push(json!({ "type": "FOOTER", "code_expiration_minutes": minutes.get() }));
    }
    let button = match &tpl.android {
        None => json!({ "type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code" }),
        Some(app) => {
            let mut b = json!({
                "type": "OTP",
                "otp_type": if app.zero_tap { "ZERO_TAP" } else { "ONE_TAP" },
                "text": "Copy code",
                "autofill_text": "Autofill",
                "supported_apps": [{
                    "package_name": app.package_name.as_str(),
                    "signature_hash": app.signature_hash.as_str(),
                }],
            });
            if app.zero_tap {
                b["zero_tap_terms_accepted"] = json!(true);
            }
            b
        }
    };
    out.push(json!({ "type": "BUTTONS", "buttons": [button] }));
    Value::Array(out)
}

/// The text a customer sees when template `name` is sent in `language` with the body
/// `parameters` (in order), as the sandbox and `waotp chat` show it: header, body, footer and
/// buttons; `None` when the flow file does not give the template's content in that language.
/// An authentication template shows WhatsApp's wording with `code` (dots without one).
pub fn customer_text(
    file: &FlowFile,
    name: &str,
    language: &str,
    parameters: &[String],
    code: Option<&str>,
) -> Option<String> {
    let (key, tpl) = file
        .templates
        .iter()
        .find(|(_, t)| t.name.as_str() == name)?;
    if !has_content(tpl) {
        return None;
    }
    let mut out = String::new();
    if tpl.category.get() == &TemplateCategory::Authentication {
        // WhatsApp's wording (it translates it into the template's language itself).
        out.push_str(&format!(
            "*{}* is your verification code.",
            code.unwrap_or("······")
        ));
        if tpl
            .add_security_recommendation
            .as_ref()
            .is_some_and(|a| *a.get())
        {
            out.push_str(" For your security, do not share this code.");
        }
        if let Some(m) = &tpl.code_expiration_minutes {
            out.push_str(&format!("\nThis code expires in {} minutes.", m.get()));
        }
        out.push_str(if tpl.android.is_some() {
            "\n[Autofill]"
        } else {
            "\n[Copy code]"
        });
        return Some(out);
    }
    let body = text_in(file, tpl.body.as_ref().map(|b| b.as_str()), language)?;
    if let Some(h) = text_in(file, tpl.header.as_ref().map(|h| h.as_str()), language) {
        out.push_str(&format!("*{h}*\n"));
    }
    let (positional_body, _) = positional(body);
    let numbered: BTreeMap<String, Value> = parameters
        .iter()
        .enumerate()
        .map(|(i, p)| ((i + 1).to_string(), Value::from(p.as_str())))
        .collect();
    out.push_str(&render(&positional_body, &numbered));
    if let Some(f) = text_in(file, tpl.footer.as_ref().map(|f| f.as_str()), language) {
        out.push_str(&format!("\n_{f}_"));
    }
    let mut titles: Vec<String> = tpl
        .quick_replies
        .iter()
        .map(|q| {
            quick_reply_title(file, key, q.as_str(), language)
                .unwrap_or(q.as_str())
                .to_owned()
        })
        .collect();
    titles.extend(
        tpl.url_buttons
            .iter()
            .map(|b| format!("{} ↗", b.title.as_str())),
    );
    if !titles.is_empty() {
        let buttons: Vec<String> = titles.iter().map(|t| format!("[{t}]")).collect();
        out.push('\n');
        out.push_str(&buttons.join(" "));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_placeholders_become_positional_in_order() {
        let (text, names) = positional("Hi {{ name }}, order {{id}} of {{total}}.");
        assert_eq!(text, "Hi {{1}}, order {{2}} of {{3}}.");
        assert_eq!(names, ["name", "id", "total"]);
        assert_eq!(positional("no placeholders").0, "no placeholders");
    }

    #[test]
    fn the_customer_sees_the_body_with_the_parameters_sent() {
        let text = r#"
id = "t"
version = "1"
[start]
state = "ask"
api = true
[vars.order_id]
source = "api"
[messages.body]
en = "Order {{order_id}} is ready."
[messages.foot]
en = "Reply STOP to stop"
[templates.ready]
name = "order_ready"
category = "utility"
body = "body"
footer = "foot"
quick_replies = ["ok"]
[templates.code]
name = "otp_code"
category = "authentication"
code_expiration_minutes = 10
[states.ask]
kind = "ask"
message = "body"
template = "ready"
buttons = [{ id = "ok", title = "OK", goto = "done" }]
[states.done]
kind = "end"
outcome = "done"
"#;
        let file: FlowFile = toml::from_str(text).expect("parses");
        assert_eq!(
            customer_text(&file, "order_ready", "en", &["A-7".to_owned()], None).as_deref(),
            Some("Order A-7 is ready.\n_Reply STOP to stop_\n[OK]")
        );
        assert_eq!(customer_text(&file, "order_ready", "fr", &[], None), None);
        assert_eq!(
            customer_text(&file, "otp_code", "en", &[], Some("123456")).as_deref(),
            Some("*123456* is your verification code.\nThis code expires in 10 minutes.\n[Copy code]")
        );
    }
}
