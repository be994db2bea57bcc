//! `waotp templates list|check|push`: from the flow files to WhatsApp's approval and back.
//!
//! `list` prints, as one JSON array, the body of Meta's `POST /{WABA-ID}/message_templates` for
//! every template and language the flows need; `check` compares them with the business
//! account's templates; `push` creates the missing ones (and, only with `--update`, edits those
//! that differ). Exit codes: 0 ok; 1 a flow cannot run (`check`), a Graph API call failed, or
//! a template could not be created; 2 bad usage, a missing account id or token, or invalid flow
//! files. A Graph error that is the token's (HTTP 401, code 190, a missing permission) gets a
//! line saying what to fix; the token itself is never printed.
//!
//! With a tenants file (`WAOTP_TENANTS`) and no flows directory given, the commands work on one
//! merchant's templates ([`Target::resolve`]): `--merchant ID` (needed when the file declares
//! several) names it; its flows, its `waba_id` and the token of its first number that has one
//! are used.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use super::{compare, wanted, Standing, Verdict, Wanted};
use crate::flow::cli::{FAILED, INVALID, OK, USAGE};
use crate::flow::{FlowSet, LoadError};
use crate::tenants::FlowSource;
use crate::whatsapp::errors::GraphError;
use crate::whatsapp::templates::TemplateClient;

/// Graph API calls of the command wait at most this long each.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the business account is and how to reach it.
pub struct Account<'a> {
    pub graph_url: &'a str,
    pub waba_id: Option<&'a str>,
    pub token: Option<&'a str>,
}

impl std::fmt::Debug for Account<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: shown only as present or not.
        f.debug_struct("Account")
            .field("graph_url", &self.graph_url)
            .field("waba_id", &self.waba_id)
            .field("token", &self.token.map(|_| "[redacted]"))
            .finish()
    }
}

/// What a templates command works on: flows, and the account and token `check` and `push`
/// use.
#[derive(Debug)]
pub struct Target {
    /// The tenants file's merchant, when the target is one.
    pub merchant: Option<String>,
    pub flows: FlowSource,
    pub waba_id: Option<String>,
    pub token: Option<SecretString>,
}

impl Target {
    /// The flows of `dir` (`flows` when not given) and the account of the environment; with a
    /// tenants file and no `dir`, those of the merchant `merchant` names (or of the file's only
    /// merchant): its flows, its `waba_id` (else `waba_id`) and the access token of its first
    /// number that has one (else `token`). The exit code after printing why when there is none.
    pub fn resolve(
        tenants: Option<&Path>,
        merchant: Option<&str>,
        dir: Option<&Path>,
        waba_id: Option<&str>,
        token: Option<&str>,
        err: &mut dyn Write,
    ) -> Result<Target, u8> {
        let token = token.map(|t| SecretString::from(t.to_owned()));
        let from_env = |dir: &Path| Target {
            merchant: None,
            flows: FlowSource::Dir(dir.to_path_buf()),
            waba_id: waba_id.map(str::to_owned),
            token: token.clone(),
        };
        let file = match (tenants, merchant, dir) {
            (_, None, Some(dir)) => return Ok(from_env(dir)),
            (None, None, None) => return Ok(from_env(Path::new("flows"))),
            (_, Some(_), Some(_)) => {
                let _ = writeln!(
                    err,
                    "waotp templates: give a flows directory or --merchant, not both"
                );
                return Err(USAGE);
            }
            (None, Some(_), None) => {
                let _ = writeln!(
                    err,
                    "waotp templates: --merchant needs the tenants file (set WAOTP_TENANTS)"
                );
                return Err(USAGE);
            }
            (Some(file), _, None) => file,
        };
        let registry = match crate::tenants::file::read(file, &|name| std::env::var(name).ok()) {
            Ok(t) => t,
            Err(errors) => {
                let _ = writeln!(err, "{errors}");
                return Err(INVALID);
            }
        };
        let ids = || {
            registry
                .merchants()
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = match merchant {
            Some(id) => registry.merchant(id),
            None if registry.merchants().len() == 1 => registry.merchants().first(),
            None => {
                let _ = writeln!(
                    err,
                    "waotp templates: {} declares several merchants: choose one with --merchant ID (one of: {})",
                    file.display(),
                    ids()
                );
                return Err(USAGE);
            }
        };
        let Some(m) = chosen else {
            let _ = writeln!(
                err,
                "waotp templates: no merchant `{}` in {} (its merchants: {})",
                merchant.unwrap_or_default(),
                file.display(),
                ids()
            );
            return Err(USAGE);
        };
        Ok(Target {
            merchant: Some(m.id.clone()),
            flows: m.flows.clone(),
            waba_id: m.waba_id.clone().or_else(|| waba_id.map(str::to_owned)),
            token: m
                .numbers
                .iter()
                .find_map(|n| n.access_token.clone())
                .or(token),
        })
    }

    /// The account and token as [`Account`] gives them to the Graph client.
    fn account<'a>(&'a self, graph_url: &'a str) -> Account<'a> {
        use secrecy::ExposeSecret;
        Account {
            graph_url,
            waba_id: self.waba_id.as_deref(),
            token: self.token.as_ref().map(|t| t.expose_secret()),
        }
    }
}

/// The flows of `source`, or the exit code after printing why not: [`INVALID`] for invalid
/// files, [`FAILED`] when they cannot be read.
fn load(source: &FlowSource, err: &mut dyn Write) -> Result<FlowSet, u8> {
    match source.load() {
        Ok(set) => Ok(set),
        Err(LoadError::Invalid(diags)) => {
            for d in &diags {
                let _ = writeln!(err, "{d}");
            }
            Err(INVALID)
        }
        Err(e) => {
            let _ = writeln!(err, "{e}");
            Err(FAILED)
        }
    }
}

fn needed(flows: &FlowSource, err: &mut dyn Write) -> Result<Vec<Wanted>, u8> {
    let flows = load(flows, err)?;
    wanted(&flows).map_err(|clashes| {
        for c in clashes {
            let _ = writeln!(err, "{c}");
        }
        INVALID
    })
}

fn content_missing(w: &Wanted, err: &mut dyn Write) {
    let _ = writeln!(
        err,
        "{} [{}] ({}): content missing in the flow file (give the template a `body`)",
        w.spec.name,
        w.spec.language,
        w.flows.join(", ")
    );
}

/// `waotp templates list [DIR]`.
pub fn list(flows: &FlowSource, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let wanted = match needed(flows, err) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let mut bodies = Vec::new();
    for w in &wanted {
        match w.spec.create_body() {
            Some(body) => bodies.push(body),
            None => content_missing(w, err),
        }
    }
    let text = serde_json::to_string_pretty(&Value::Array(bodies)).unwrap_or_default();
    let _ = writeln!(out, "{text}");
    OK
}

fn client(account: &Account<'_>, command: &str, err: &mut dyn Write) -> Result<TemplateClient, u8> {
    let (waba, token) = match (account.waba_id, account.token) {
        (Some(waba), Some(token)) => (waba, token),
        (waba, token) => {
            let missing = match (waba, token) {
                (None, None) => "WAOTP_WABA_ID (or --waba-id) and WAOTP_ACCESS_TOKEN are not set",
                (None, _) => "WAOTP_WABA_ID (or --waba-id) is not set",
                _ => "WAOTP_ACCESS_TOKEN is not set",
            };
            let _ = writeln!(
                err,
                "waotp templates {command}: {missing}: give the WhatsApp Business Account id and a token allowed to manage its templates"
            );
            return Err(USAGE);
        }
    };
    TemplateClient::new(
        account.graph_url,
        waba,
        SecretString::from(token.to_owned()),
        CALL_TIMEOUT,
    )
    .map_err(|e| {
        let _ = writeln!(err, "waotp templates {command}: {e}");
        USAGE
    })
}

fn runtime(err: &mut dyn Write) -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            let _ = writeln!(err, "cannot start the async runtime: {e}");
            FAILED
        })
}

/// What to do about a Graph error that is the account's settings, not the templates.
fn hint(e: &GraphError) -> Option<&'static str> {
    match e {
        // 190: the token is invalid or expired (HTTP 401).
        GraphError::Api { status: 401, .. } | GraphError::Http { status: 401 } => Some(AUTH_HINT),
        GraphError::Api { .. } if e.code() == Some(190) => Some(AUTH_HINT),
        // 10 / 200–299: the token lacks a permission.
        GraphError::Api { .. } if matches!(e.code(), Some(10 | 200..=299)) => Some(
            "the token lacks a permission: it needs whatsapp_business_management on this WhatsApp Business Account",
        ),
        _ => None,
    }
}

const AUTH_HINT: &str = "WhatsApp refused the access token: set WAOTP_ACCESS_TOKEN to a valid token (a system user's token with whatsapp_business_management)";

/// The verdict on every template the target's flows need; the exit code when there is none.
fn verdicts(
    target: &Target,
    graph_url: &str,
    command: &str,
    err: &mut dyn Write,
) -> Result<(Vec<Verdict>, TemplateClient, tokio::runtime::Runtime), u8> {
    let account = target.account(graph_url);
    let wanted = needed(&target.flows, err)?;
    if let Some(merchant) = &target.merchant {
        let missing = match (account.waba_id, account.token) {
            (None, None) => Some("no waba_id and no number with an access token"),
            (None, Some(_)) => Some("no waba_id"),
            (Some(_), None) => Some("no number with an access token (access_token_env)"),
            _ => None,
        };
        if let Some(missing) = missing {
            let _ = writeln!(
                err,
                "waotp templates {command}: merchant `{merchant}` has {missing} in the tenants file"
            );
            return Err(USAGE);
        }
    }
    let client = client(&account, command, err)?;
    let rt = runtime(err)?;
    let remote = rt.block_on(client.list()).map_err(|e| {
        let _ = writeln!(
            err,
            "waotp templates {command}: cannot read the templates from {}: {e}",
            account.graph_url.trim_end_matches('/')
        );
        if let Some(hint) = hint(&e) {
            let _ = writeln!(err, "{hint}");
        }
        FAILED
    })?;
    Ok((compare(wanted, &remote), client, rt))
}

/// `waotp templates check [DIR]`: exits 1 when a flow cannot run.
pub fn check(target: &Target, graph_url: &str, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let (verdicts, _, _) = match verdicts(target, graph_url, "check", err) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let mut blocked = 0;
    for v in &verdicts {
        let _ = writeln!(out, "{}", v.line());
        if v.standing.blocks() {
            blocked += 1;
        }
    }
    if blocked > 0 {
        let _ = writeln!(
            err,
            "{blocked} template(s) keep a flow from running; `waotp templates push` creates missing ones"
        );
        FAILED
    } else {
        OK
    }
}

/// `waotp templates push [DIR] [--update]`: creates what is missing; edits what differs only
/// with `update`. Running it again creates nothing.
pub fn push(
    target: &Target,
    graph_url: &str,
    update: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let (verdicts, client, rt) = match verdicts(target, graph_url, "push", err) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let mut failed = false;
    for v in &verdicts {
        let spec = &v.wanted.spec;
        let what = format!("{} [{}]", spec.name, spec.language);
        let Some(body) = spec.create_body() else {
            content_missing(&v.wanted, err);
            continue;
        };
        match (&v.standing, &v.remote) {
            (Standing::Missing, _) => match rt.block_on(client.create(&body)) {
                Ok(created) => {
                    let _ = writeln!(
                        out,
                        "{what}: created ({}, id {})",
                        created.status.to_ascii_lowercase(),
                        created.id
                    );
                }
                Err(e) => {
                    failed = true;
                    let _ = writeln!(err, "{what}: not created: {e}");
                }
            },
            (Standing::Different(field), Some(remote))
                if update
                    && matches!(
                        Standing::from_status(&remote.status, None),
                        Standing::Pending
                    ) =>
            {
                let _ = writeln!(
                    out,
                    "{what}: {field} differs; not edited while WhatsApp reviews it (only approved, rejected or paused templates can be edited): run again once it is reviewed"
                );
            }
            (Standing::Different(field), Some(_)) if update && field.starts_with("category") => {
                let _ = writeln!(
                    out,
                    "{what}: {field} differs; not edited: WhatsApp never changes an approved template's category (give the flow file WhatsApp's category, or delete the template in WhatsApp Manager and push again)"
                );
            }
            (Standing::Different(field), Some(remote)) if update => {
                let edit = json!({ "components": body["components"] });
                match rt.block_on(client.edit(&remote.id, &edit)) {
                    Ok(()) => {
                        let _ = writeln!(out, "{what}: updated ({field} changed)");
                    }
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(err, "{what}: not updated: {e}");
                    }
                }
            }
            (Standing::Different(field), _) => {
                let _ = writeln!(
                    out,
                    "{what}: {field} differs; left as it is (run with --update to edit it)"
                );
            }
            (standing, _) => {
                let _ = writeln!(out, "{what}: exists ({standing})");
            }
        }
    }
    if failed {
        FAILED
    } else {
        OK
    }
}
