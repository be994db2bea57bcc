//! The texts the engine says on its own — re-prompts, a wrong code, resend notices — in the
//! languages waotp ships, and how a flow's `[texts]` table overrides them.
//!
//! Pure data and lookup: which text a situation calls for is the engine's business, whether a
//! flow's overrides are well formed is the validator's.

use crate::flow::model::FlowFile;

/// One built-in text: its id (the key in a flow's `[texts]`), the placeholders it may use
/// besides the flow's variables, and its shipped translations.
#[derive(Debug)]
pub struct BuiltinText {
    /// Key in `[texts]`, e.g. `wrong_code`.
    pub id: &'static str,
    /// When the engine says it.
    pub when: &'static str,
    /// Placeholders filled by the engine, e.g. `attempts_left`.
    pub placeholders: &'static [&'static str],
    /// `(language, text)`, English first.
    pub texts: &'static [(&'static str, &'static str)],
}

/// Languages every built-in text is shipped in: WhatsApp's largest OTP markets.
pub const SHIPPED_LANGUAGES: &[&str] = &["en", "hi", "es", "pt", "id", "ar"];

/// Every built-in text.
pub const BUILTIN_TEXTS: &[BuiltinText] = &[
    BuiltinText {
        id: "reprompt_choices",
        when: "an answer matches no button or list row (and the state has no `reprompt`)",
        placeholders: &[],
        texts: &[
            (
                "en",
                "Sorry, I didn't get that. Please choose one of the options.",
            ),
            (
                "hi",
                "माफ़ कीजिए, मैं समझ नहीं पाया। कृपया दिए गए विकल्पों में से एक चुनें।",
            ),
            (
                "es",
                "Lo siento, no lo entendí. Por favor, elige una de las opciones.",
            ),
            (
                "pt",
                "Desculpe, não entendi. Por favor, escolha uma das opções.",
            ),
            (
                "id",
                "Maaf, saya tidak mengerti. Silakan pilih salah satu opsi.",
            ),
            ("ar", "عذرًا، لم أفهم ذلك. يُرجى اختيار أحد الخيارات."),
        ],
    },
    BuiltinText {
        id: "reprompt_text",
        when: "an answer cannot be used in a state without choices (and it has no `reprompt`)",
        placeholders: &[],
        texts: &[
            ("en", "Sorry, I didn't get that. Please try again."),
            ("hi", "माफ़ कीजिए, मैं समझ नहीं पाया। कृपया फिर से कोशिश करें।"),
            (
                "es",
                "Lo siento, no lo entendí. Por favor, inténtalo de nuevo.",
            ),
            ("pt", "Desculpe, não entendi. Por favor, tente novamente."),
            ("id", "Maaf, saya tidak mengerti. Silakan coba lagi."),
            ("ar", "عذرًا، لم أفهم ذلك. يُرجى المحاولة مرة أخرى."),
        ],
    },
    BuiltinText {
        id: "reprompt_code",
        when: "an OTP state gets a message without a code (and it has no `reprompt`)",
        placeholders: &["length"],
        texts: &[
            ("en", "Please type the {{length}}-digit code we sent you."),
            ("hi", "कृपया हमारा भेजा हुआ {{length}} अंकों का कोड टाइप करें।"),
            (
                "es",
                "Por favor, escribe el código de {{length}} dígitos que te enviamos.",
            ),
            (
                "pt",
                "Por favor, digite o código de {{length}} dígitos que enviamos para você.",
            ),
            (
                "id",
                "Silakan ketik kode {{length}} digit yang kami kirimkan.",
            ),
            (
                "ar",
                "يُرجى كتابة الرمز المكوّن من {{length}} أرقام الذي أرسلناه إليك.",
            ),
        ],
    },
    BuiltinText {
        id: "wrong_code",
        when: "a wrong code while attempts are left (and the state has no `wrong_code`)",
        placeholders: &["attempts_left"],
        texts: &[
            (
                "en",
                "That code is not right. {{attempts_left}} attempt(s) left.",
            ),
            ("hi", "यह कोड सही नहीं है। बचे हुए प्रयास: {{attempts_left}}।"),
            (
                "es",
                "Ese código no es correcto. Intentos restantes: {{attempts_left}}.",
            ),
            (
                "pt",
                "Esse código não está correto. Tentativas restantes: {{attempts_left}}.",
            ),
            ("id", "Kode itu salah. Sisa percobaan: {{attempts_left}}."),
            (
                "ar",
                "هذا الرمز غير صحيح. المحاولات المتبقية: {{attempts_left}}.",
            ),
        ],
    },
    BuiltinText {
        id: "resend_too_soon",
        when: "a new code is asked for before the OTP rules' cooldown has passed",
        placeholders: &["wait_secs"],
        texts: &[
            (
                "en",
                "Please wait {{wait_secs}} seconds before asking for a new code.",
            ),
            (
                "hi",
                "नया कोड माँगने से पहले कृपया {{wait_secs}} सेकंड प्रतीक्षा करें।",
            ),
            (
                "es",
                "Por favor, espera {{wait_secs}} segundos antes de pedir un código nuevo.",
            ),
            (
                "pt",
                "Por favor, aguarde {{wait_secs}} segundos antes de pedir um novo código.",
            ),
            (
                "id",
                "Mohon tunggu {{wait_secs}} detik sebelum meminta kode baru.",
            ),
            (
                "ar",
                "يُرجى الانتظار قبل طلب رمز جديد (الوقت المتبقي بالثواني: {{wait_secs}}).",
            ),
        ],
    },
    BuiltinText {
        id: "no_resend",
        when: "a new code is asked for after `max_resends`",
        placeholders: &[],
        texts: &[
            ("en", "No more new codes can be sent for this request."),
            ("hi", "इस अनुरोध के लिए अब और नए कोड नहीं भेजे जा सकते।"),
            (
                "es",
                "No se pueden enviar más códigos nuevos para esta solicitud.",
            ),
            (
                "pt",
                "Não é possível enviar mais códigos novos para esta solicitação.",
            ),
            (
                "id",
                "Tidak ada lagi kode baru yang dapat dikirim untuk permintaan ini.",
            ),
            ("ar", "لا يمكن إرسال المزيد من الرموز الجديدة لهذا الطلب."),
        ],
    },
    BuiltinText {
        id: "otp_refused",
        when: "the OTP rules refuse to issue a code (country, rate limits, block)",
        placeholders: &[],
        texts: &[
            (
                "en",
                "No code can be sent right now. Please try again later.",
            ),
            (
                "hi",
                "अभी कोई कोड नहीं भेजा जा सकता। कृपया बाद में फिर से कोशिश करें।",
            ),
            (
                "es",
                "Ahora mismo no se puede enviar ningún código. Por favor, inténtalo más tarde.",
            ),
            (
                "pt",
                "Não é possível enviar um código agora. Por favor, tente novamente mais tarde.",
            ),
            (
                "id",
                "Saat ini kode tidak dapat dikirim. Silakan coba lagi nanti.",
            ),
            ("ar", "لا يمكن إرسال رمز الآن. يُرجى المحاولة مرة أخرى لاحقًا."),
        ],
    },
    BuiltinText {
        id: "use_site",
        when: "a code is typed in the chat for a state with `check = \"api\"`",
        placeholders: &[],
        texts: &[
            (
                "en",
                "Please enter the code on the website where you asked for it.",
            ),
            ("hi", "कृपया यह कोड उसी वेबसाइट पर डालें जहाँ आपने इसे माँगा था।"),
            (
                "es",
                "Por favor, introduce el código en el sitio web donde lo solicitaste.",
            ),
            (
                "pt",
                "Por favor, insira o código no site onde você o solicitou.",
            ),
            (
                "id",
                "Silakan masukkan kode di situs web tempat Anda memintanya.",
            ),
            ("ar", "يُرجى إدخال الرمز في الموقع الإلكتروني الذي طلبته منه."),
        ],
    },
    BuiltinText {
        id: "busy",
        when: "the customer writes while a hook state waits for the merchant (once)",
        placeholders: &[],
        texts: &[
            ("en", "One moment, please…"),
            ("hi", "कृपया एक क्षण रुकें…"),
            ("es", "Un momento, por favor…"),
            ("pt", "Um momento, por favor…"),
            ("id", "Mohon tunggu sebentar…"),
            ("ar", "لحظة من فضلك…"),
        ],
    },
];

/// The built-in text called `id`.
pub fn builtin_text(id: &str) -> Option<&'static BuiltinText> {
    BUILTIN_TEXTS.iter().find(|t| t.id == id)
}

/// The unrendered text `id` for a session in `lang`: the flow's own `[texts]` in that language,
/// else the shipped translation (`pt_BR` and `pt-BR` fall back to `pt`), else the flow's or the
/// shipped text in the flow's default language, else English.
pub fn text_for<'f>(file: &'f FlowFile, id: &str, lang: &str) -> &'f str {
    let default = file.default_language();
    let own = |l: &str| {
        file.texts
            .get(id)
            .and_then(|t| t.get(l))
            .map(|t| t.as_str())
    };
    let shipped = |l: &str| -> Option<&'static str> {
        let t = builtin_text(id)?;
        let base = l.split(['_', '-']).next().unwrap_or(l);
        t.texts
            .iter()
            .find(|(x, _)| *x == l)
            .or_else(|| t.texts.iter().find(|(x, _)| *x == base))
            .map(|(_, text)| *text)
    };
    own(lang)
        .or_else(|| shipped(lang))
        .or_else(|| own(default))
        .or_else(|| shipped(default))
        .or_else(|| shipped("en"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::render::placeholders;

    #[test]
    fn every_text_is_shipped_in_every_language_with_its_placeholders() {
        for t in BUILTIN_TEXTS {
            let langs: Vec<&str> = t.texts.iter().map(|(l, _)| *l).collect();
            assert_eq!(langs, SHIPPED_LANGUAGES, "languages of `{}`", t.id);
            for (lang, text) in t.texts {
                let mut used: Vec<&str> = placeholders(text).into_iter().map(|(_, n)| n).collect();
                used.sort();
                let mut declared = t.placeholders.to_vec();
                declared.sort();
                assert_eq!(used, declared, "placeholders of `{}` in `{lang}`", t.id);
            }
        }
    }
}
