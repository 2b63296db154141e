//! Command-line arguments and the commands they run.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use toolgate_clock::SystemClock;
use toolgate_policy::{Call, MemoryStore};

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
    Ui(crate::ui::UiArgs),
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
    #[command(flatten)]
    audit: crate::flags::AuditArgs,
    /// The largest message accepted from the client.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,
    #[command(flatten)]
    host: crate::flags::HostArgs,
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
        Command::Ui(ui) => crate::ui::run(ui),
        Command::Demo { server } => crate::demo::run(server),
        Command::Audit(audit) => crate::audit_cmd::run(audit),
        Command::Approvals(approvals) => crate::approvals_cmd::run(approvals),
        Command::Grant { command } => crate::grant::run(command),
    }
}

fn validate(files: &[PathBuf]) -> Result<u8> {
    let mut failed = false;
    for file in files {
        if crate::config::is_config_file(file) {
            failed |= !crate::config::validate(file);
            continue;
        }
        match toolgate_host::policy::load_policy(file) {
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
    let policy = match toolgate_host::policy::load_policy(file) {
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
    let now = toolgate_clock::Clock::now_ms(&SystemClock);
    let decision = policy.decide(&call, &MemoryStore::new(), now);
    let (kind, rule, reason) = toolgate_audit::decision_facts(&decision);
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
    toolgate_host::run::run(toolgate_host::run::RunFlags {
        policy: run.policy,
        grant: run.grant,
        audit: run.audit.audit,
        audit_args: run.audit.audit_args,
        log_level: run.audit.log_level,
        max_message_bytes: run.max_message_bytes,
        state: run.host.state.flags(),
        admin: run.host.admin,
        telemetry: run.host.telemetry,
        audit_retention: run.host.audit_retention,
        audit_when_full: run.host.audit_when_full,
        name: run.name,
        command: run.command,
    })
}
