//! The engine in the customer's language: titles, list texts and built-in texts by language,
//! the flow's `[texts]` overrides, typed titles in any language, and interrupts found inside
//! longer messages (English, Hindi, Spanish and Arabic word boundaries).

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::flow::load::parse_flow;

const FLOW: &str = r#"
id = "lang"
version = "1"
on_retries_exhausted = "done"

[start]
state = "pick"
keywords = ["lang test"]

[vars.problem]
source = "customer"

[interrupts.agent]
words = ["agent", "एजेंट", "agente", "وكيل", "यक्ति"]
match = "word"
goto = "done"

[interrupts.cancel]
words = ["cancel", "रद्द करें"]
goto = "done"

[texts.reprompt_choices]
es = "No entendí: toca un botón, por favor."

[texts.wrong_code]
en = "Wrong code, {{attempts_left}} left."

[messages.prompt]
en = "Pick one"
hi = "एक चुनें"
es = "Elige uno"

[messages.code]
en = "Type the code"
hi = "कोड टाइप करें"
es = "Escribe el código"

[messages.menu]
en = "Pick a row"
hi = "एक पंक्ति चुनें"
es = "Elige una fila"

[messages.describe]
en = "Tell us"
hi = "बताइए"
es = "Cuéntanos"

[templates.auth]
name = "otp"
language = "en"
category = "authentication"

[states.pick]
kind = "ask"
message = "prompt"
buttons = [
  { id = "confirm", title = { en = "Confirm", hi = "पुष्टि करें", es = "Confirmar" }, goto = "code" },
  { id = "menu", title = { en = "More", hi = "और", es = "Más" }, goto = "menu" },
]
timeout = "1h"
on_timeout = "done"

[states.menu]
kind = "ask"
message = "menu"
list = { button = { en = "Options", hi = "विकल्प", es = "Opciones" }, rows = [
  { id = "describe", title = { en = "Describe", hi = "बताएँ", es = "Describir" }, description = { en = "In words", hi = "शब्दों में", es = "Con palabras" }, goto = "describe" },
] }
timeout = "1h"
on_timeout = "done"

[states.describe]
kind = "ask"
message = "describe"
on_text = "done"
save_as = "problem"
timeout = "1h"
on_timeout = "done"

[states.code]
kind = "otp"
message = "code"
template = "auth"
next = "done"
on_locked = "done"
on_expired = "done"

[states.code.otp]
resend_words = ["resend", "फिर भेजें"]
max_resends = 1

[states.done]
kind = "end"
outcome = "done"
"#;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn flow() -> Flow {
    parse_flow("lang.toml", FLOW).expect("valid flow")
}

/// A started session in `lang`, moved on by `events`.
fn session(f: &Flow, lang: &str, events: Vec<Event>) -> SessionState {
    let mut rng = StdRng::seed_from_u64(1);
    let s = new_session(f, BTreeMap::new(), lang, t0()).expect("session");
    let (mut s, _) = step(f, &s, Event::Start, t0(), &mut rng);
    for e in events {
        s = step(f, &s, e, t0(), &mut rng).0;
    }
    s
}

fn say(f: &Flow, s: &SessionState, event: Event) -> (SessionState, Vec<MessageBody>) {
    let mut rng = StdRng::seed_from_u64(2);
    let (s, fx) = step(f, s, event, t0(), &mut rng);
    let sent = fx
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m.body),
            _ => None,
        })
        .collect();
    (s, sent)
}

fn text(body: &str) -> Event {
    Event::Text {
        body: body.to_owned(),
    }
}

fn tap(id: &str) -> Event {
    Event::Reply { id: id.to_owned() }
}

fn titles(body: &MessageBody) -> Vec<String> {
    match body {
        MessageBody::Buttons { buttons, .. } => buttons.iter().map(|b| b.title.clone()).collect(),
        MessageBody::List { button, rows, .. } => std::iter::once(button.clone())
            .chain(rows.iter().map(|r| r.title.clone()))
            .chain(rows.iter().filter_map(|r| r.description.clone()))
            .collect(),
        MessageBody::Text { .. } => Vec::new(),
    }
}

#[test]
fn buttons_and_lists_are_in_the_session_language() {
    let f = flow();
    for (lang, buttons, list) in [
        (
            "en",
            ["Confirm", "More"],
            ["Options", "Describe", "In words"],
        ),
        ("hi", ["पुष्टि करें", "और"], ["विकल्प", "बताएँ", "शब्दों में"]),
        (
            "es",
            ["Confirmar", "Más"],
            ["Opciones", "Describir", "Con palabras"],
        ),
        // A language the titles lack: the default language's.
        (
            "pt",
            ["Confirm", "More"],
            ["Options", "Describe", "In words"],
        ),
    ] {
        let s = new_session(&f, BTreeMap::new(), lang, t0()).expect("session");
        let (s, sent) = say(&f, &s, Event::Start);
        assert_eq!(titles(&sent[0]), buttons, "{lang}");
        let (_, sent) = say(&f, &s, tap("menu"));
        assert_eq!(titles(&sent[0]), list, "{lang}");
    }
}

#[test]
fn a_typed_title_in_any_of_the_flows_languages_picks_the_choice() {
    let f = flow();
    for (lang, typed) in [
        ("hi", "पुष्टि करें"),
        ("hi", "confirm"),
        ("en", "पुष्टि करें!"),
        ("es", "CONFIRMAR"),
    ] {
        let s = session(&f, lang, vec![]);
        let (s, _) = say(&f, &s, text(typed));
        assert_eq!(s.state.as_str(), "code", "{lang}: {typed}");
    }
}

#[test]
fn built_in_texts_come_in_the_session_language_with_the_choices_again() {
    let f = flow();
    let s = session(&f, "hi", vec![]);
    let (_, sent) = say(&f, &s, text("क्या?"));
    assert_eq!(
        sent[0].text(),
        "माफ़ कीजिए, मैं समझ नहीं पाया। कृपया दिए गए विकल्पों में से एक चुनें।"
    );
    assert_eq!(titles(&sent[0]), ["पुष्टि करें", "और"]);
    // The flow's own wording wins in its language.
    let s = session(&f, "es", vec![]);
    let (_, sent) = say(&f, &s, text("¿qué?"));
    assert_eq!(sent[0].text(), "No entendí: toca un botón, por favor.");
    // A regional code falls back to its language; an unknown one to the default language.
    let s = session(&f, "pt_BR", vec![]);
    let (_, sent) = say(&f, &s, text("hein?"));
    assert_eq!(
        sent[0].text(),
        "Desculpe, não entendi. Por favor, escolha uma das opções."
    );
    let s = session(&f, "xx", vec![]);
    let (_, sent) = say(&f, &s, text("huh?"));
    assert_eq!(
        sent[0].text(),
        "Sorry, I didn't get that. Please choose one of the options."
    );
}

#[test]
fn code_notices_are_in_the_session_language() {
    let f = flow();
    let s = session(&f, "hi", vec![tap("confirm")]);
    assert_eq!(s.state.as_str(), "code");
    let (_, sent) = say(&f, &s, text("नमस्ते"));
    assert_eq!(sent[0].text(), "कृपया हमारा भेजा हुआ 6 अंकों का कोड टाइप करें।");
    let (_, sent) = say(&f, &s, Event::OtpWrong { attempts_left: 3 });
    assert_eq!(sent[0].text(), "यह कोड सही नहीं है। बचे हुए प्रयास: 3।");
    let (_, sent) = say(&f, &s, Event::OtpResendTooSoon { wait_secs: 40 });
    assert_eq!(sent[0].text(), "नया कोड माँगने से पहले कृपया 40 सेकंड प्रतीक्षा करें।");
    let (_, sent) = say(&f, &s, Event::OtpRefused);
    assert_eq!(
        sent[0].text(),
        "अभी कोई कोड नहीं भेजा जा सकता। कृपया बाद में फिर से कोशिश करें।"
    );
    let (asked, _) = say(&f, &s, text("फिर भेजें"));
    let (again, _) = say(&f, &asked, Event::OtpResent);
    let (_, sent) = say(&f, &again, text("फिर भेजें"));
    assert_eq!(sent[0].text(), "इस अनुरोध के लिए अब और नए कोड नहीं भेजे जा सकते।");
    // The flow overrides `wrong_code` in English only: other languages keep the shipped text.
    let s = session(&f, "en", vec![tap("confirm")]);
    let (_, sent) = say(&f, &s, Event::OtpWrong { attempts_left: 2 });
    assert_eq!(sent[0].text(), "Wrong code, 2 left.");
    let s = session(&f, "ar", vec![tap("confirm")]);
    let (_, sent) = say(&f, &s, Event::OtpWrong { attempts_left: 2 });
    assert_eq!(sent[0].text(), "هذا الرمز غير صحيح. المحاولات المتبقية: 2.");
}

#[test]
fn a_word_matching_interrupt_fires_inside_longer_messages_in_every_language() {
    let f = flow();
    for (lang, typed) in [
        ("en", "I want an agent please"),
        ("en", "AGENT!!"),
        ("hi", "मुझे एजेंट से बात करनी है"),
        ("hi", "कृपया एजेंट।"),
        ("es", "¿Puedo hablar con un agente?"),
        ("ar", "أريد التحدث إلى وكيل من فضلك"),
        // In the code state too, when the message holds no code.
        ("en", "no code came, get me an agent"),
    ] {
        let events = if typed.contains("code") {
            vec![tap("confirm")]
        } else {
            vec![]
        };
        let s = session(&f, lang, events);
        let (s, _) = say(&f, &s, text(typed));
        assert_eq!(s.state.as_str(), "done", "{lang}: {typed}");
    }
}

#[test]
fn a_word_matching_interrupt_needs_whole_words() {
    let f = flow();
    for typed in [
        "the agents are busy",
        "एजेंटों से नहीं",
        // `यक्ति` is not a word of `व्यक्ति` ("person"): the virama keeps `व्` in the word.
        "किसी व्यक्ति से",
        "agentes",
    ] {
        let s = session(&f, "hi", vec![]);
        let (s, _) = say(&f, &s, text(typed));
        assert_eq!(s.state.as_str(), "pick", "{typed}");
    }
}

#[test]
fn a_whole_message_interrupt_does_not_fire_inside_a_longer_message() {
    let f = flow();
    let s = session(&f, "hi", vec![]);
    let (s2, _) = say(&f, &s, text("please cancel it"));
    assert_eq!(s2.state.as_str(), "pick");
    let (s3, _) = say(&f, &s, text("रद्द करें"));
    assert_eq!(s3.state.as_str(), "done");
}

#[test]
fn a_free_text_answer_keeps_the_word_but_the_whole_word_still_interrupts() {
    let f = flow();
    let s = session(&f, "en", vec![tap("menu"), tap("describe")]);
    assert_eq!(s.state.as_str(), "describe");
    let (answered, _) = say(&f, &s, text("The agent at the door was rude"));
    assert_eq!(answered.state.as_str(), "done");
    assert_eq!(
        answered.vars.get("problem"),
        Some(&Value::from("The agent at the door was rude"))
    );
    let (interrupted, _) = say(&f, &s, text("agent"));
    assert_eq!(interrupted.state.as_str(), "done");
    assert_eq!(interrupted.vars.get("problem"), None);
}
