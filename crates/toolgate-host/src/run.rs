//! `toolgate run`: the stdio gateway in front of one MCP server (a child
//! process), with the admin API beside it on a small runtime of its own.

use crate::host::{Host, HostOptions};
use anyhow::{Context, Result};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use toolgate_audit::LogLevel;
use toolgate_clock::SystemClock;
use toolgate_gateway::{run_stdio, StdioOptions};

/// `toolgate run` as the user asked for it.
#[derive(Debug, Clone)]
pub struct RunFlags {
    pub policy: PathBuf,
    pub grant: String,
    pub audit: Option<PathBuf>,
    pub audit_args: bool,
    pub log_level: LogLevel,
    pub max_message_bytes: usize,
    pub state: crate::stores::StateFlags,
    pub admin: crate::admin::AdminFlags,
    pub telemetry: crate::telemetry::TelemetryFlags,
    pub audit_retention: Option<String>,
    pub audit_when_full: toolgate_audit::WhenFull,
    /// The server's name (default: its command line).
    pub name: Option<String>,
    pub command: Vec<String>,
}

/// Runs the gateway until the server or the client is gone, then exits
/// the process with the server's code (a read blocked on stdin must not
/// hold the process open). An invalid policy is printed and gives 1.
pub fn run(flags: RunFlags) -> Result<u8> {
    let policy = match crate::policy::load_policy(&flags.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("toolgate: refusing to start with an invalid policy");
            return Ok(1);
        }
    };
    let state = flags.state.resolve(None)?;
    let admin = crate::admin::admin_options(&flags.admin, None, &crate::process_env)?;
    let server_name = flags
        .name
        .clone()
        .unwrap_or_else(|| flags.command.join(" "));
    let otlp = crate::telemetry::otlp_settings(&flags.telemetry, None, &crate::process_env)?;
    let mut host = Host::open(HostOptions {
        state,
        admin,
        otlp,
        audit_file: flags.audit.clone(),
        log_level: flags.log_level,
        audit_retention: flags.audit_retention.clone(),
        audit_when_full: flags.audit_when_full,
        default_server: server_name.clone(),
    })?;
    let server_up = Arc::new(AtomicBool::new(false));
    let pins = crate::stores::open_pins(&host.state)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    let approval_events = {
        let _entered = runtime.enter();
        host.approval_events()
    };
    let console = crate::console::RunConsole {
        server: server_name.clone(),
        pins: pins.clone(),
    };
    let policy_file = toolgate_console::PolicyFile {
        path: flags.policy.clone(),
        scope: toolgate_console::Scope::Gateway,
    };
    runtime.block_on(host.start_admin(
        approval_events.clone(),
        (Arc::new(console), vec![policy_file]),
        crate::telemetry::child_up(server_name.clone(), server_up.clone()),
        std::future::pending(),
    ))?;
    let opts = StdioOptions {
        policy: Arc::new(policy),
        policy_file: Some(flags.policy.clone()),
        store: crate::stores::open_store(&host.state)?,
        clock: Arc::new(SystemClock),
        grant: flags.grant,
        audit: host.audit.clone(),
        audit_args: flags.audit_args,
        max_message_bytes: flags.max_message_bytes,
        command: flags.command.clone(),
        forward_signals: true,
        approvals: host.approvals.clone(),
        approval_events,
        pins,
        server_name,
        pins_fail_open: host.pins_fail_open(),
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
    std::process::exit(code);
}
