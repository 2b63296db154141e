//! `toolgate serve`'s arguments as the user wrote them; toolgate-host
//! builds and runs the gateway from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use toolgate_host::serve::ServeFlags;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The gateway config file (YAML or TOML): servers, grants, policies, listen address.
    #[arg(long, conflicts_with_all = ["policy", "upstream", "command"])]
    config: Option<PathBuf>,
    /// The policy file, for one server given by --upstream or after `--`.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A Streamable HTTP MCP server to front (instead of a command after `--`).
    #[arg(long, conflicts_with = "command")]
    upstream: Option<String>,
    /// Address to listen on (default 127.0.0.1:8080, or the config's `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    audit: crate::flags::AuditArgs,
    /// Environment variable holding the 32-byte session key (64 hex digits);
    /// gateways sharing it can continue each other's sessions.
    #[arg(long, default_value = "TOOLGATE_SESSION_KEY")]
    session_key_env: String,
    /// Threads serving client connections, each connection on one of them
    /// start to end [default: one per CPU]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    #[command(flatten)]
    host: crate::flags::HostArgs,
    /// The MCP server command and its arguments (one stdio server).
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    toolgate_host::serve::run(ServeFlags {
        config: args.config,
        policy: args.policy,
        upstream: args.upstream,
        listen: args.listen,
        audit: args.audit.audit,
        audit_args: args.audit.audit_args,
        log_level: args.audit.log_level,
        session_key_env: args.session_key_env,
        workers: args.workers,
        state: args.host.state.flags(),
        admin: args.host.admin,
        telemetry: args.host.telemetry,
        audit_retention: args.host.audit_retention,
        audit_when_full: args.host.audit_when_full,
        command: args.command,
    })
}
