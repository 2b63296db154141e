//! `toolgate ui`'s arguments as the user wrote them; toolgate-host builds
//! and serves the dashboard from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toolgate_host::ui::{UiFlags, DEFAULT_UI_LISTEN};

#[derive(Debug, clap::Args)]
pub struct UiArgs {
    /// A gateway config: its servers are scanned at start and its policy
    /// files are editable.
    #[arg(long, conflicts_with_all = ["policy", "upstream", "command"])]
    config: Option<PathBuf>,
    /// A policy file to edit (with its server given by --upstream or after
    /// `--`, to list its tools).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A Streamable HTTP MCP server to scan (instead of a command after `--`).
    #[arg(long, conflicts_with = "command", requires = "policy")]
    upstream: Option<String>,
    /// Where the dashboard listens.
    #[arg(long, default_value = DEFAULT_UI_LISTEN)]
    listen: SocketAddr,
    /// The environment variable holding the admin token that signs in (at
    /// least 16 characters) [default: TOOLGATE_ADMIN_TOKEN; with a config's
    /// admin section, admin.token_sha256 is used unless this flag is given]
    #[arg(long, value_name = "VAR")]
    admin_token_env: Option<String>,
    #[command(flatten)]
    state: crate::flags::StateArgs,
    /// How long to wait for each server to start and list its tools.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// The MCP server command and its arguments (with --policy).
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(args: UiArgs) -> anyhow::Result<u8> {
    toolgate_host::ui::run(UiFlags {
        config: args.config,
        policy: args.policy,
        upstream: args.upstream,
        listen: args.listen,
        admin_token_env: args.admin_token_env,
        state: args.state.flags(),
        timeout: Duration::from_secs(args.timeout),
        command: args.command,
    })
}
