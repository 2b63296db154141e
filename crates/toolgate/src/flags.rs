//! The flags several commands share, as the user wrote them (low level:
//! clap checks their syntax); each turns into the plain `*Flags` of
//! toolgate-host, which builds the real settings from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use toolgate_audit::LogLevel;
use toolgate_host::admin::AdminFlags;
use toolgate_host::stores::StateFlags;
use toolgate_host::telemetry::TelemetryFlags;
use toolgate_policy::FailMode;

/// The audit trail's file and the log level (`run` and `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Append one JSON line per tool-call decision to this file.
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Record the raw arguments of each call in the audit file (by default only their SHA-256).
    #[arg(long)]
    pub audit_args: bool,
    /// error, warn, info (a line per decision) or debug.
    #[arg(long, default_value = "warn")]
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FailArg {
    /// Calls that need counters are refused while the store is unreachable.
    Closed,
    /// They are admitted without being counted.
    Open,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Where counters live: embedded (a database in --data-dir; the default),
    /// memory (forgotten on exit) or redis://HOST:PORT/DB (shared by replicas).
    #[arg(long)]
    pub state: Option<String>,
    /// The data directory (default: $TOOLGATE_DATA_DIR, else
    /// $XDG_DATA_HOME/toolgate, else ~/.local/share/toolgate).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// What calls that need counters get while the store is unreachable.
    #[arg(long, value_enum)]
    pub state_fail: Option<FailArg>,
    /// The Redis key prefix (one per deployment).
    #[arg(long)]
    pub state_prefix: Option<String>,
}

impl StateArgs {
    /// The state settings: these flags, else the config's, else the defaults.
    pub fn resolve(
        &self,
        config: Option<&toolgate_config::StateConfig>,
    ) -> anyhow::Result<toolgate_config::StateConfig> {
        self.flags().resolve(config)
    }

    pub fn flags(&self) -> StateFlags {
        StateFlags {
            state: self.state.clone(),
            data_dir: self.data_dir.clone(),
            state_fail: self.state_fail.map(|fail| match fail {
                FailArg::Closed => FailMode::Closed,
                FailArg::Open => FailMode::Open,
            }),
            state_prefix: self.state_prefix.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// Serve the admin API (out-of-band approvals, docs/admin-api.md) on
    /// this address, such as 127.0.0.1:8081 [overrides admin.listen]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// The environment variable holding the admin API's bearer token
    /// [default: TOOLGATE_ADMIN_TOKEN; with a config's admin section,
    /// admin.token_sha256 is used unless this flag is given]
    #[arg(long, value_name = "VAR")]
    pub admin_token_env: Option<String>,
    /// POST every new approval request, signed, to this http:// URL
    /// [overrides admin.webhook.url; needs an admin listener]
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// The environment variable holding the webhook secret that signs
    /// webhooks and callbacks [default: TOOLGATE_WEBHOOK_SECRET]
    #[arg(long, value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
}

impl AdminArgs {
    pub fn flags(&self) -> AdminFlags {
        AdminFlags {
            admin_listen: self.admin_listen,
            admin_token_env: self.admin_token_env.clone(),
            webhook_url: self.webhook_url.clone(),
            webhook_secret_env: self.webhook_secret_env.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// Export a trace span of every tool call over OTLP/HTTP to this
    /// collector, such as http://127.0.0.1:4318 or https://collector:4318
    /// (spans go to URL/v1/traces)
    /// [overrides telemetry.otlp.endpoint and OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// http/protobuf (the default) or http/json
    /// [overrides telemetry.otlp.protocol and OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
}

impl TelemetryArgs {
    pub fn flags(&self) -> TelemetryFlags {
        TelemetryFlags {
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_protocol: self.otlp_protocol.clone(),
        }
    }
}

/// What `run` and `serve` both take around their gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Prune audit-trail records older than this (such as 30d), at start and
    /// every hour; by default records are kept.
    #[arg(long, value_name = "DURATION")]
    pub audit_retention: Option<String>,
}
