//! The flags several commands share, as the user wrote them (low level:
//! clap checks their syntax); each turns into the plain `*Flags` of
//! toolgate-host, which builds the real settings from them.

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

/// What `run` and `serve` both take around their gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub admin: AdminFlags,
    #[command(flatten)]
    pub telemetry: TelemetryFlags,
    /// Prune audit-trail records older than this (such as 30d, or forever to
    /// keep every record), at start and every hour; by default records older
    /// than 30 days and beyond the newest 10,000,000 are pruned.
    #[arg(long, value_name = "DURATION")]
    pub audit_retention: Option<String>,
    /// What a call does when the audit writer's queue is full (the disk
    /// cannot keep up): wait (up to 100 ms, then the record is dropped,
    /// counted and said on stderr) or block (wait as long as it takes).
    #[arg(long, value_name = "RULE", default_value = "wait")]
    pub audit_when_full: toolgate_audit::WhenFull,
}
