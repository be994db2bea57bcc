//! The OpenAPI 3.1 description of every `/v1` route, built from the code: the request and
//! answer types' JSON Schemas (schemars, JSON Schema 2020-12 as OpenAPI 3.1 uses), the error
//! catalogue ([`super::error::CATALOGUE`]) and, for each route of the route table
//! ([`super::routes`]), its operation below, which names the route's error codes. Served at `GET /v1/openapi.json` (no key: it describes the API, it
//! holds nothing of anyone's) and committed as `docs/openapi.json`, which a test keeps equal.

use super::error::{catalogued, doc_url, ErrorCode, CATALOGUE, DOC_PAGE};
use super::routes::V1Route;
use super::sandbox::{InboundRequest, SandboxInbound, SandboxMessages};
use super::sessions::{CheckAnswer, CheckRequest, SessionList, StartAnswer, StartRequest};
use crate::runtime::session_object::SessionObject;
use actix_web::HttpResponse;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Errors every keyed route can answer.
const KEYED: &[&str] = &[
    "unauthorized",
    "too_many_attempts",
    "rate_limited",
    "internal_error",
];

/// A query, path or header parameter.
struct Param {
    name: &'static str,
    place: &'static str,
    schema: fn() -> Value,
    required: bool,
    description: &'static str,
}

/// One route as documented.
struct Operation {
    id: &'static str,
    summary: &'static str,
    keyed: bool,
    params: Vec<Param>,
    body: Option<Value>,
    ok: (u16, &'static str, Value),
    errors: &'static [&'static str],
}

fn string() -> Value {
    json!({"type": "string"})
}

fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn param(
    name: &'static str,
    place: &'static str,
    required: bool,
    schema: fn() -> Value,
    description: &'static str,
) -> Param {
    Param {
        name,
        place,
        schema,
        required,
        description,
    }
}

fn session_id() -> Param {
    param("id", "path", true, string, "The session's id (`ses_…`).")
}

/// The description of `route`.
fn operation(route: V1Route, g: &mut Schemas) -> Operation {
    match route {
        V1Route::StartSession => Operation {
            id: "startSession",
            summary: "Start a session of a flow for a customer",
            keyed: true,
            params: vec![param(
                "Idempotency-Key",
                "header",
                false,
                || json!({"type": "string", "minLength": 1, "maxLength": 255}),
                "Makes a retry safe: the first answer (a `201`) comes back for 24 hours.",
            )],
            body: Some(g.request::<StartRequest>()),
            ok: (201, "The session, started.", g.answer::<StartAnswer>()),
            errors: &[
                "payload_too_large",
                "body_timeout",
                "invalid_json",
                "invalid_idempotency_key",
                "idempotency_key_reused",
                "idempotency_key_in_use",
                "unknown_flow",
                "missing_var",
                "invalid_vars",
                "invalid_phone",
                "unknown_number",
                "business_number_unset",
                "session_active",
                "country_not_allowed",
                "customer_rate_limited",
                "customer_blocked",
                "global_ceiling",
            ],
        },
        V1Route::ListSessions => Operation {
            id: "listSessions",
            summary: "List sessions, newest first, a page at a time",
            keyed: true,
            params: vec![
                param("flow", "query", false, string, "Only sessions of this flow."),
                param(
                    "status",
                    "query",
                    false,
                    || json!({"type": "string", "enum": ["active", "completed"]}),
                    "Only running or only ended sessions.",
                ),
                param("outcome", "query", false, string, "Only sessions that ended with this outcome."),
                param(
                    "customer",
                    "query",
                    false,
                    string,
                    "Only this customer's sessions: an E.164 number (`+` written `%2B`) or a business-scoped user id.",
                ),
                param("created_after", "query", false, date_time, "Only sessions created strictly after this instant (RFC 3339)."),
                param("created_before", "query", false, date_time, "Only sessions created strictly before this instant (RFC 3339)."),
                param(
                    "limit",
                    "query",
                    false,
                    || json!({"type": "integer", "minimum": 1, "maximum": super::list::MAX_LIMIT, "default": super::list::DEFAULT_LIMIT}),
                    "Sessions per page.",
                ),
                param(
                    "starting_after",
                    "query",
                    false,
                    string,
                    "The `next_cursor` of the previous page.",
                ),
            ],
            body: None,
            ok: (200, "A page of sessions.", g.answer::<SessionList>()),
            errors: &["invalid_query", "invalid_filter", "invalid_cursor"],
        },
        V1Route::GetSession => Operation {
            id: "getSession",
            summary: "Read a session",
            keyed: true,
            params: vec![session_id()],
            body: None,
            ok: (200, "The session.", g.answer::<SessionObject>()),
            errors: &["not_found"],
        },
        V1Route::CancelSession => Operation {
            id: "cancelSession",
            summary: "Cancel a session (no-op once it has ended)",
            keyed: true,
            params: vec![session_id()],
            body: None,
            ok: (200, "The session, ended with outcome `cancelled` unless it had already ended.", g.answer::<SessionObject>()),
            errors: &["not_found"],
        },
        V1Route::CheckCode => Operation {
            id: "checkCode",
            summary: "Check a code the customer typed on the merchant's site",
            keyed: true,
            params: vec![session_id()],
            body: Some(g.request::<CheckRequest>()),
            ok: (200, "The verdict; a wrong code is counted as in the chat.", g.answer::<CheckAnswer>()),
            errors: &[
                "payload_too_large",
                "body_timeout",
                "invalid_json",
                "invalid_code",
                "not_found",
                "check_in_chat",
                "reverse_otp",
                "no_code_pending",
                "session_completed",
            ],
        },
        V1Route::Stats => Operation {
            id: "getStats",
            summary: "The verification funnel of one flow or all, over whole hours",
            keyed: true,
            params: vec![
                param("flow", "query", false, string, "One flow; all flows when left out."),
                param("from", "query", false, date_time, "Start (rounded down to its hour); 24 hours before `to` by default."),
                param("to", "query", false, date_time, "End (rounded up to its hour); now by default."),
            ],
            body: None,
            ok: (200, "The funnel: counts, rates and time-to-verify (described in docs/dashboard.md).", json!({"type": "object"})),
            errors: &["invalid_query", "unknown_flow", "invalid_date", "invalid_range"],
        },
        V1Route::SandboxMessages => Operation {
            id: "listSandboxMessages",
            summary: "What the bot sent a number (sandbox mode only)",
            keyed: true,
            params: vec![
                param("to", "query", true, string, "The customer's number, E.164 (`+` written `%2B`)."),
                param("min", "query", false, || json!({"type": "integer", "minimum": 0}), "Wait until at least this many messages are recorded …"),
                param("wait", "query", false, || json!({"type": "integer", "minimum": 0, "maximum": 30}), "… for up to this many seconds."),
                param("from", "query", false, string, "The merchant's number the messages went from (phone number id or business number); its first number when left out."),
            ],
            body: None,
            ok: (200, "The messages.", g.answer::<SandboxMessages>()),
            errors: &["not_sandbox", "invalid_query", "invalid_phone", "unknown_number"],
        },
        V1Route::SandboxInbound => Operation {
            id: "sendSandboxInbound",
            summary: "Play the customer: a message handled exactly like a signed webhook (sandbox mode only)",
            keyed: true,
            params: vec![],
            body: Some(g.request::<InboundRequest>()),
            ok: (200, "The message, recorded and flushed.", g.answer::<SandboxInbound>()),
            errors: &[
                "not_sandbox",
                "payload_too_large",
                "body_timeout",
                "invalid_json",
                "invalid_phone",
                "unknown_number",
                "invalid_message",
            ],
        },
        V1Route::OpenApi => Operation {
            id: "getOpenApi",
            summary: "This description",
            keyed: false,
            params: vec![],
            body: None,
            ok: (200, "The OpenAPI 3.1 document.", json!({"type": "object"})),
            errors: &[],
        },
    }
}

/// Schemas of request bodies (as read) and answers (as written), gathered under
/// `#/components/schemas`.
struct Schemas {
    requests: SchemaGenerator,
    answers: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Schemas {
            requests: settings.clone().for_deserialize().into_generator(),
            answers: settings.for_serialize().into_generator(),
        }
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        self.named::<T>(true)
    }

    fn answer<T: JsonSchema>(&mut self) -> Value {
        self.named::<T>(false)
    }

    /// A `$ref` to `T`'s schema, which is kept under its own name.
    fn named<T: JsonSchema>(&mut self, request: bool) -> Value {
        let g = if request {
            &mut self.requests
        } else {
            &mut self.answers
        };
        g.subschema_for::<T>().to_value()
    }

    fn into_components(mut self) -> Map<String, Value> {
        let mut all = self.answers.take_definitions(true);
        all.extend(self.requests.take_definitions(true));
        all
    }
}

/// The error object's schema, with `code` limited to `codes` when given.
fn error_schema(codes: Option<&[&ErrorCode]>) -> Value {
    let mut code = json!({"type": "string", "description": "Stable, snake_case; see `doc_url`."});
    if let Some(codes) = codes {
        code["enum"] = json!(codes.iter().map(|c| c.code).collect::<Vec<_>>());
    }
    json!({
        "type": "object",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "param", "doc_url"],
            "additionalProperties": false,
            "properties": {
                "code": code,
                "message": {"type": "string", "description": "For people; may change."},
                "param": {"type": ["string", "null"], "description": "The request field at fault, e.g. `vars.order_id`."},
                "doc_url": {"type": "string", "description": format!("The code's entry in the error table: `{DOC_PAGE}#<code>`, relative to the project's root.")},
                "retry_after": {"type": "integer", "minimum": 1, "description": "Seconds to wait before retrying (also in `Retry-After`)."},
                "session_id": {"type": "string", "description": "The existing session the refusal is about."},
            },
        }},
    })
}

fn responses(op: &Operation) -> Value {
    let request_id = json!({"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}});
    let mut out = Map::new();
    let (status, description, schema) = &op.ok;
    out.insert(
        status.to_string(),
        json!({"description": description, "headers": request_id,
               "content": {"application/json": {"schema": schema}}}),
    );
    let mut codes: Vec<&str> = op.errors.to_vec();
    if op.keyed {
        codes.extend_from_slice(KEYED);
    } else {
        codes.push("internal_error");
    }
    let mut by_status: BTreeMap<u16, Vec<&ErrorCode>> = BTreeMap::new();
    for code in codes {
        let entry = catalogued(code).unwrap_or_else(|| panic!("`{code}` is not catalogued"));
        by_status.entry(entry.status).or_default().push(entry);
    }
    for (status, entries) in by_status {
        let lines: Vec<String> = entries
            .iter()
            .map(|c| format!("- `{}` ({}): {}", c.code, doc_url(c.code), c.meaning))
            .collect();
        let mut headers = request_id.clone();
        if status == 429 {
            headers["Retry-After"] = json!({"$ref": "#/components/headers/Retry-After"});
        }
        out.insert(
            status.to_string(),
            json!({
                "description": lines.join("\n"),
                "headers": headers,
                "content": {"application/json": {"schema": error_schema(Some(&entries))}},
            }),
        );
    }
    Value::Object(out)
}

/// Builds the document.
pub fn document() -> Value {
    let mut schemas = Schemas::new();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in V1Route::ALL {
        let op = operation(route, &mut schemas);
        let mut o = json!({
            "operationId": op.id,
            "summary": op.summary,
            "parameters": op.params.iter().map(|p| json!({
                "name": p.name, "in": p.place, "required": p.required,
                "description": p.description, "schema": (p.schema)(),
            })).collect::<Vec<_>>(),
            "responses": responses(&op),
        });
        if let Some(body) = &op.body {
            o["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        o["security"] = if op.keyed {
            json!([{"apiKey": []}])
        } else {
            json!([])
        };
        paths
            .entry(route.path())
            .or_default()
            .insert(route.method().as_str().to_ascii_lowercase(), o);
    }
    let mut components = schemas.into_components();
    components.insert("Error".into(), error_schema(None));
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "waotp merchant API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Start WhatsApp verification sessions, read and list them, check codes. Every answer carries `X-Request-Id`; every refusal is `{{\"error\": {{\"code\", \"message\", \"param\", \"doc_url\"}}}}` with a code from the table in `{DOC_PAGE}`."),
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                "description": "One of `WAOTP_API_KEYS`."}},
            "headers": {
                "X-Request-Id": {"description": "The request's id: the caller's own `X-Request-Id` when it is 1 to 128 characters of `A-Za-z0-9._:-`, else a new one. Logged with the request.",
                    "schema": {"type": "string"}},
                "Retry-After": {"description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1}},
            },
            "schemas": components,
        },
        "paths": paths,
        "x-error-codes": CATALOGUE.iter().map(|c| json!({
            "code": c.code, "status": c.status, "meaning": c.meaning, "doc_url": doc_url(c.code),
        })).collect::<Vec<_>>(),
    })
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
        text.push('\n');
        text
    })
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_text())
}
