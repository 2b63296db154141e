//! Command-line arguments and the commands they run.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toolgate_gateway::audit::LogLevel;
use toolgate_gateway::{run_stdio, StdioOptions, SystemClock};
use toolgate_policy::{parse_policy, Call, Format, MemoryStore, Policy};

#[derive(Debug, Parser)]
#[command(
    name = "toolgate",
    version,
    about = "An MCP gateway that enforces a policy on every tool call"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policy or gateway config files; print a summary of each, or every problem found.
    Validate {
        /// Policy files (.json, .yaml or .yml), or gateway configs (a top-level `servers`, or .toml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make a grant's token (`grant new NAME`) or hash a token read on stdin (`grant hash`).
    Grant {
        #[command(subcommand)]
        command: crate::grant::GrantCommand,
    },
    /// Decide one call against a policy, with no server, and print the decision.
    Check {
        /// The policy file.
        file: PathBuf,
        /// The tool name.
        #[arg(long)]
        tool: String,
        /// The call's arguments, as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The grant (agent credential) making the call.
        #[arg(long, default_value = "local")]
        grant: String,
        /// Exit 1 unless the decision is this one
        /// (allow, deny, unknown, approval_required, rate_limited).
        #[arg(long)]
        expect: Option<String>,
    },
    /// Print the policy file's JSON Schema.
    Schema,
    /// Run an MCP server behind the gateway over stdio: `toolgate run --policy P -- COMMAND ARGS...`.
    Run(RunArgs),
    /// Serve MCP over HTTP for many agents and servers: `toolgate serve --config FILE`,
    /// or `toolgate serve --policy P (--upstream URL | -- COMMAND ARGS...)`.
    Serve(crate::serve::ServeArgs),
    /// Pinned tool definitions: list them, diff a changed one, accept a change.
    Pins(crate::pins_cmd::PinsArgs),
    /// List the audit trail kept in the data directory (`audit`), check its hash chain
    /// (`audit verify`), delete old records (`audit prune`) or import an audit file (`audit import`).
    Audit(crate::audit_cmd::AuditArgs),
    /// List, show, approve or deny the tool calls held by `require_approval` rules
    /// (`approvals list`, `approvals show ID`, `approvals approve ID`, `approvals deny ID`).
    Approvals(crate::approvals_cmd::ApprovalsArgs),
    /// List every tool of MCP servers with its category, risk and evidence; optionally write a
    /// recommended policy: `toolgate scan -- COMMAND ARGS...`, `--upstream URL` or `--config FILE`.
    Scan(crate::scan::ScanArgs),
    /// The web dashboard on its own, against a data directory or Redis:
    /// `toolgate ui --config FILE`, or `toolgate ui --policy FILE [-- COMMAND ARGS...]`.
    Ui(crate::console::UiArgs),
    /// Play an agent's calls through the gateway in front of a real MCP server and print each decision.
    Demo {
        /// The server to run (default: the npm package @modelcontextprotocol/server-everything via npx).
        #[arg(last = true)]
        server: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The policy file (.json, .yaml or .yml).
    #[arg(long)]
    policy: PathBuf,
    /// The name of the local agent's grant, for `scope: "grant"` counters.
    #[arg(long, default_value = "local")]
    grant: String,
    /// Append one JSON line per tool-call decision to this file.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Record the raw arguments of each call in the audit file (by default only their SHA-256).
    #[arg(long)]
    audit_args: bool,
    /// error, warn, info (a line per decision) or debug.
    #[arg(long, default_value = "warn")]
    log_level: LogLevel,
    /// The largest message accepted from the client.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,
    #[command(flatten)]
    state: crate::state::StateArgs,
    #[command(flatten)]
    admin: crate::admin_args::AdminArgs,
    #[command(flatten)]
    telemetry: crate::telemetry_args::TelemetryArgs,
    /// Prune audit-trail records older than this (such as 30d), at start and
    /// every hour; by default records are kept.
    #[arg(long, value_name = "DURATION")]
    audit_retention: Option<String>,
    /// The server's name in pinned tool definitions and the audit trail
    /// (default: the server's command line).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The MCP server command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn dispatch(args: Args) -> Result<u8> {
    match args.command {
        Command::Validate { files } => validate(&files),
        Command::Check {
            file,
            tool,
            args,
            grant,
            expect,
        } => check(&file, &tool, &args, &grant, expect.as_deref()),
        Command::Schema => {
            println!("{}", toolgate_policy::json_schema());
            Ok(0)
        }
        Command::Run(run) => run_gateway(run),
        Command::Serve(serve) => crate::serve::run(serve),
        Command::Pins(pins) => crate::pins_cmd::run(pins),
        Command::Scan(scan) => crate::scan::run(scan),
        Command::Ui(ui) => crate::console::run_ui(ui),
        Command::Demo { server } => crate::demo::run(server),
        Command::Audit(audit) => crate::audit_cmd::run(audit),
        Command::Approvals(approvals) => crate::approvals_cmd::run(approvals),
        Command::Grant { command } => crate::grant::run(command),
    }
}

/// Reads and validates a policy file; the error text is every diagnostic, one per line.
pub fn load_policy(path: &Path) -> Result<Policy> {
    let format = Format::from_path(path).with_context(|| {
        format!(
            "{}: unknown policy format (use .json, .yaml or .yml)",
            path.display()
        )
    })?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_policy(&text, format, &path.display().to_string()).map_err(|d| anyhow::anyhow!("{d}"))
}

fn validate(files: &[PathBuf]) -> Result<u8> {
    let mut failed = false;
    for file in files {
        if crate::config::is_config_file(file) {
            failed |= !crate::config::validate(file);
            continue;
        }
        match load_policy(file) {
            Ok(policy) => println!("{}", policy.summary(&file.display().to_string())),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

fn check(file: &Path, tool: &str, args: &str, grant: &str, expect: Option<&str>) -> Result<u8> {
    let policy = match load_policy(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let arguments: serde_json::Value =
        serde_json::from_str(args).context("--args is not valid JSON")?;
    if !arguments.is_object() {
        bail!("--args must be a JSON object");
    }
    let call = Call {
        tool,
        arguments: &arguments,
        arguments_text: Some(args),
        grant,
        session: "check",
    };
    let now = toolgate_gateway::Clock::now_ms(&SystemClock);
    let decision = policy.decide(&call, &MemoryStore::new(), now);
    let (kind, rule, reason) = toolgate_gateway::audit::decision_facts(&decision);
    println!("decision: {kind}");
    println!("rule: {rule}");
    if let Some(reason) = reason {
        println!("reason: {reason}");
    }
    match expect {
        Some(want) if want != kind => {
            eprintln!("expected {want}, got {kind}");
            Ok(1)
        }
        _ => Ok(0),
    }
}

fn run_gateway(run: RunArgs) -> Result<u8> {
    let policy = match load_policy(&run.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("toolgate: refusing to start with an invalid policy");
            return Ok(1);
        }
    };
    let state = run.state.resolve(None)?;
    let admin = crate::admin_args::admin_options(&run.admin, None)?;
    let server_name = run.name.clone().unwrap_or_else(|| run.command.join(" "));
    // Metrics with the admin API; traces when a collector is configured.
    let otlp = crate::telemetry_args::otlp_settings(&run.telemetry, None)?;
    let (telemetry, observer) =
        match crate::telemetry_args::start(admin.is_some(), otlp, &server_name, run.log_level)? {
            Some((telemetry, observer)) => (Some(telemetry), Some(observer)),
            None => (None, None),
        };
    let audit = crate::audit_cmd::open_sink_observed(
        run.audit.as_deref(),
        run.log_level,
        crate::state::audit_dir(&state).as_deref(),
        observer,
    )?;
    crate::audit_cmd::audit_retention(
        crate::state::audit_dir(&state).as_deref(),
        run.audit_retention.as_deref(),
        &audit,
    )?;
    // The admin API and the webhook run on a small runtime of their own
    // beside the stdio gateway's threads.
    let approvals = crate::state::open_approvals(&state)?;
    let server_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics = telemetry.map(|telemetry| {
        Arc::new(crate::telemetry_args::GatewayMetrics {
            telemetry,
            approvals: approvals.clone(),
            upstreams: crate::telemetry_args::child_up(server_name.clone(), server_up.clone()),
        }) as Arc<dyn toolgate_admin::MetricsSource>
    });
    let pins = crate::state::open_pins(&state)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    let approval_events = {
        let _entered = runtime.enter();
        crate::admin_args::approval_events(admin.as_ref(), &audit)
    };
    if let Some(admin) = admin {
        let console = crate::console::RunConsole {
            server: server_name.clone(),
            policy: run.policy.clone(),
            audit_dir: crate::state::audit_dir(&state),
            pins: pins.clone(),
        };
        runtime.block_on(crate::admin_args::start_admin(
            admin,
            approvals.clone(),
            approval_events.clone(),
            Some(Arc::new(toolgate_console::Console::new(Arc::new(console)))),
            std::future::pending(),
            metrics,
        ))?;
    }
    let opts = StdioOptions {
        policy: Arc::new(policy),
        policy_file: Some(run.policy.clone()),
        store: crate::state::open_store(&state)?,
        clock: Arc::new(SystemClock),
        grant: run.grant,
        audit: audit.clone(),
        audit_args: run.audit_args,
        max_message_bytes: run.max_message_bytes,
        command: run.command.clone(),
        forward_signals: true,
        approvals: approvals.clone(),
        approval_events,
        pins,
        server_name,
        pins_fail_open: state.fail == toolgate_policy::FailMode::Open,
        server_up,
    };
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("stdin")?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("stdout")?;
    let code = run_stdio(
        opts,
        std::fs::File::from(stdin),
        std::fs::File::from(stdout),
    )?;
    // Exit at once: a read blocked on stdin must not hold the process open.
    std::process::exit(code);
}
