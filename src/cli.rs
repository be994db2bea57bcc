//! The command line: `waotp serve` (the default) and, as they arrive, the flow author's tools.
//!
//! Exit codes: 0 ok, 1 runtime error, 2 bad usage or invalid configuration.

use crate::app::Application;
use crate::config::Settings;
use crate::flow::cli as flow_cli;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod stats;
mod tenants;

#[derive(Debug, Parser)]
#[command(
    name = "waotp",
    version,
    about = "WhatsApp one-time-password verification bot"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook and merchant API server (configured by WAOTP_* variables).
    #[command(after_help = crate::config::help_text())]
    Serve,
    /// Check every flow file in DIR; prints every file:line:col error and exits 2 on any
    /// (1 when DIR cannot be read). Warnings are printed too and leave the exit code 0.
    Validate {
        /// Flows directory.
        #[arg(default_value = "flows")]
        dir: PathBuf,
    },
    /// Run the scripted conversations stored beside the flows (DIR/tests); exits 1 on a failed
    /// case, 2 on invalid flow files.
    Test {
        /// Flows directory.
        #[arg(default_value = "flows")]
        dir: PathBuf,
    },
    /// Talk to a flow in the terminal, with a fake clock (/tap ID, /wait 10m, /hook NAME {json},
    /// /hookerror NAME, /fail, /otp, /check CODE, /cancel, /state, /help, /quit).
    Chat {
        /// Flow id (a file of --dir), or the path of one flow file (FILE.toml).
        flow: String,
        /// Flows directory.
        #[arg(long, default_value = "flows")]
        dir: PathBuf,
        /// A start variable, NAME=VALUE; repeat as needed.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Session language, e.g. hi (default: the flow's default_language, as for a session
        /// started without one).
        #[arg(long)]
        lang: Option<String>,
    },
    /// Print the JSON Schema of the flow file format.
    Schema {
        /// Print the flow guide's reference tables (Markdown) instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Print a running server's verification funnel (GET /v1/stats) as a table.
    Stats {
        /// Only this flow (default: all flows).
        #[arg(long)]
        flow: Option<String>,
        /// Only this merchant (default: every merchant the keys belong to, each listed).
        #[arg(long)]
        merchant: Option<String>,
        /// How far back to look, e.g. 24h, 7d, 1h30m.
        #[arg(long, default_value = "24h")]
        since: String,
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Merchant API keys, comma-separated (WAOTP_API_KEYS when not given): each merchant
        /// they belong to is reported.
        #[arg(long, env = "WAOTP_API_KEYS", hide_env_values = true)]
        key: Option<String>,
    },
    /// The flows' WhatsApp templates: list them as Meta's JSON, check them against the WhatsApp
    /// Business Account, create the missing ones.
    #[command(after_help = TEMPLATES_HELP)]
    Templates {
        #[command(subcommand)]
        action: TemplatesCommand,
    },
    /// The tenants file that declares several merchants and their numbers (WAOTP_TENANTS).
    Tenants {
        #[command(subcommand)]
        action: TenantsCommand,
    },
    /// Print a flow as a Mermaid state diagram.
    Graph {
        /// Flow id (a file of --dir), or the path of one flow file (FILE.toml).
        flow: String,
        /// Flows directory.
        #[arg(long, default_value = "flows")]
        dir: PathBuf,
    },
}

/// What `waotp templates`, `check` and `push` need and how they end.
const TEMPLATES_HELP: &str = "\
check and push read the account from WAOTP_WABA_ID (or --waba-id) and the token from
WAOTP_ACCESS_TOKEN (environment only; a system user's token with whatsapp_business_management).
The token is never printed.

With WAOTP_TENANTS set and no DIR, they work on one merchant of the tenants file (--merchant ID,
required when it declares several): its flows, its waba_id and the token of its first number
that has one.

Exit codes: 0 done; 1 a flow cannot run (check), a Graph API call failed or a template was not
created (push); 2 bad usage, missing settings or invalid flow files.";

/// `waotp templates …`.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Print every template the flows need, per language, as the JSON body of Meta's
    /// `POST /{WABA-ID}/message_templates` (templates whose content is missing are named on
    /// stderr).
    List {
        /// Flows directory (default `flows`; with WAOTP_TENANTS, the merchant's flows).
        dir: Option<PathBuf>,
        #[command(flatten)]
        tenant: TenantArgs,
    },
    /// Compare the flows' templates with the WhatsApp Business Account's: missing, pending,
    /// approved, rejected (with Meta's reason), paused, disabled or different, per template and
    /// language. Exits 1 when a flow cannot run.
    #[command(after_help = TEMPLATES_HELP)]
    Check {
        /// Flows directory (default `flows`; with WAOTP_TENANTS, the merchant's flows).
        dir: Option<PathBuf>,
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(flatten)]
        account: AccountArgs,
    },
    /// Create the templates the account is missing (a second run creates nothing). Templates
    /// that exist are never edited without --update.
    #[command(after_help = TEMPLATES_HELP)]
    Push {
        /// Flows directory (default `flows`; with WAOTP_TENANTS, the merchant's flows).
        dir: Option<PathBuf>,
        /// Also edit existing templates whose content differs from the flow files.
        #[arg(long)]
        update: bool,
        #[command(flatten)]
        tenant: TenantArgs,
        #[command(flatten)]
        account: AccountArgs,
    },
}

/// The merchant of a tenants file a templates command works on.
#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    /// With WAOTP_TENANTS: the merchant whose flows, waba_id and token are used (required when
    /// the file declares several merchants).
    #[arg(long)]
    merchant: Option<String>,
    /// The tenants file (read from the environment only).
    #[arg(skip = std::env::var_os("WAOTP_TENANTS").filter(|t| !t.is_empty()).map(PathBuf::from))]
    tenants: Option<PathBuf>,
}

impl TenantArgs {
    fn target(
        &self,
        dir: Option<&std::path::Path>,
        account: Option<&AccountArgs>,
        err: &mut dyn std::io::Write,
    ) -> Result<crate::templates::cli::Target, u8> {
        crate::templates::cli::Target::resolve(
            self.tenants.as_deref(),
            self.merchant.as_deref(),
            dir,
            account.and_then(|a| a.waba_id.as_deref()),
            account.and_then(|a| a.token.as_deref()),
            err,
        )
    }
}

/// `waotp tenants …`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Check a tenants file as `waotp serve` would (the environment variables it names must be
    /// set) and list its merchants and numbers, never a token, secret or key; exits 1 with
    /// every file:line:col error.
    Check {
        /// Tenants file.
        #[arg(env = "WAOTP_TENANTS", default_value = "tenants.toml")]
        file: PathBuf,
    },
    /// Read an API key on standard input and print the `sha256:<hex>` digest a tenants file
    /// lists in `api_keys`.
    KeyDigest,
}

/// The WhatsApp Business Account `check` and `push` talk to.
#[derive(Debug, clap::Args)]
pub struct AccountArgs {
    /// WhatsApp Business Account id.
    #[arg(long, env = "WAOTP_WABA_ID")]
    waba_id: Option<String>,
    /// Graph API base URL.
    #[arg(long, env = "WAOTP_GRAPH_URL", default_value = crate::config::DEFAULT_GRAPH_URL)]
    graph_url: String,
    /// Graph API token (read from the environment only).
    #[arg(skip = std::env::var("WAOTP_ACCESS_TOKEN").ok().filter(|t| !t.trim().is_empty()))]
    token: Option<String>,
}

fn parse_var(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{raw}` is not NAME=VALUE"))
}

/// The `--help` text of `waotp validate`.
pub fn validate_help() -> String {
    use clap::CommandFactory;
    Cli::command()
        .find_subcommand_mut("validate")
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default()
}

/// Parses the arguments and runs the chosen command.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (out, err) = (&mut std::io::stdout(), &mut std::io::stderr());
    let code = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => return serve(),
        Command::Validate { dir } => flow_cli::validate(&dir, out, err),
        Command::Test { dir } => flow_cli::test(&dir, out, err),
        Command::Chat {
            flow,
            dir,
            vars,
            lang,
        } => flow_cli::chat(
            &dir,
            &flow,
            &vars,
            lang.as_deref(),
            &mut std::io::stdin().lock(),
            out,
            err,
        ),
        Command::Schema { markdown: false } => flow_cli::schema(out),
        Command::Schema { markdown: true } => flow_cli::schema_markdown(out),
        Command::Graph { flow, dir } => flow_cli::graph(&dir, &flow, out, err),
        Command::Templates { action } => match action {
            TemplatesCommand::List { dir, tenant } => {
                match tenant.target(dir.as_deref(), None, err) {
                    Ok(target) => crate::templates::cli::list(&target.flows, out, err),
                    Err(code) => code,
                }
            }
            TemplatesCommand::Check {
                dir,
                tenant,
                account,
            } => match tenant.target(dir.as_deref(), Some(&account), err) {
                Ok(target) => crate::templates::cli::check(&target, &account.graph_url, out, err),
                Err(code) => code,
            },
            TemplatesCommand::Push {
                dir,
                update,
                tenant,
                account,
            } => match tenant.target(dir.as_deref(), Some(&account), err) {
                Ok(target) => {
                    crate::templates::cli::push(&target, &account.graph_url, update, out, err)
                }
                Err(code) => code,
            },
        },
        Command::Tenants { action } => match action {
            TenantsCommand::Check { file } => tenants::check(&file, out, err),
            TenantsCommand::KeyDigest => {
                tenants::key_digest(&mut std::io::stdin().lock(), out, err)
            }
        },
        Command::Stats {
            flow,
            merchant,
            since,
            url,
            key,
        } => stats::run(
            &stats::StatsArgs {
                url: &url,
                key: key.as_deref(),
                flow: flow.as_deref(),
                merchant: merchant.as_deref(),
                since: &since,
            },
            out,
            err,
        ),
    };
    ExitCode::from(code)
}

fn serve() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("waotp: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&settings.log, settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("waotp")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waotp: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<crate::app::ConfigurationError>().is_some() => {
            eprintln!("waotp: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "waotp stopped with an error");
            eprintln!("waotp: {e:#}");
            ExitCode::from(1)
        }
    }
}
