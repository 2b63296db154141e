//! What `toolgate run` and `toolgate serve` both open before their gateway
//! starts, written once: the audit sink (with the observer that feeds
//! metrics and traces), retention, the approval store, the approval events
//! and the admin listener with its dashboard and `GET /metrics`.

use crate::telemetry::{GatewayMetrics, Telemetry, Upstreams};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use toolgate_admin::AdminOptions;
use toolgate_approvals::{ApprovalEvents, ApprovalStore};
use toolgate_audit::{AuditSink, LogLevel};
use toolgate_config::StateConfig;
use toolgate_telemetry::OtlpSettings;

/// The built settings both gateways share.
pub struct HostOptions {
    pub state: StateConfig,
    pub admin: Option<AdminOptions>,
    /// Where spans go (`None`: no traces).
    pub otlp: Option<OtlpSettings>,
    /// `--audit FILE`.
    pub audit_file: Option<PathBuf>,
    pub log_level: LogLevel,
    /// `--audit-retention` (such as `30d`, or `forever`; `None`: the
    /// default retention, `audit::DEFAULT_RETENTION`).
    pub audit_retention: Option<String>,
    /// `--audit-when-full`.
    pub audit_when_full: toolgate_audit::WhenFull,
    /// The server named in metrics when a record names none.
    pub default_server: String,
}

/// The parts of a running gateway that are not the gateway.
pub struct Host {
    pub state: StateConfig,
    pub audit_dir: Option<PathBuf>,
    pub audit: AuditSink,
    pub approvals: Arc<dyn ApprovalStore>,
    admin: Option<AdminOptions>,
    telemetry: Option<Telemetry>,
}

impl Host {
    /// Starts telemetry (metrics with the admin API, traces with a
    /// collector), opens the audit sink, starts retention and opens the
    /// approval store.
    pub fn open(opts: HostOptions) -> Result<Host> {
        let (telemetry, observer) = match crate::telemetry::start(
            opts.admin.is_some(),
            opts.otlp,
            &opts.default_server,
            opts.log_level,
        )? {
            Some((telemetry, observer)) => (Some(telemetry), Some(observer)),
            None => (None, None),
        };
        let audit_dir = crate::stores::audit_dir(&opts.state);
        let audit = crate::audit::open_sink_observed(
            opts.audit_file.as_deref(),
            opts.log_level,
            audit_dir.as_deref(),
            observer,
        )?
        .when_full(opts.audit_when_full);
        crate::audit::audit_retention(
            audit_dir.as_deref(),
            opts.audit_retention.as_deref(),
            &audit,
        )?;
        Ok(Host {
            approvals: crate::stores::open_approvals(&opts.state)?,
            state: opts.state,
            audit_dir,
            audit,
            admin: opts.admin,
            telemetry,
        })
    }

    /// Whether an admin listener is configured.
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// The approval events: the audit trail, and the webhook when one is
    /// configured. Call inside a tokio runtime (the webhook sends from a task).
    pub fn approval_events(&self) -> Arc<dyn ApprovalEvents> {
        crate::admin::approval_events(self.admin.as_ref(), &self.audit)
    }

    /// Starts the admin listener (when one is configured) on the current
    /// runtime, with the dashboard of `console` (on `policy_files` and the
    /// audit trail) and the metrics of `upstreams`, until `shutdown`.
    pub async fn start_admin(
        &mut self,
        events: Arc<dyn ApprovalEvents>,
        (console, policy_files): (
            Arc<dyn toolgate_console::ConsoleBackend>,
            Vec<toolgate_console::PolicyFile>,
        ),
        upstreams: Upstreams,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Some(admin) = self.admin.take() else {
            return Ok(());
        };
        let metrics = self.telemetry.take().map(|telemetry| {
            Arc::new(GatewayMetrics {
                telemetry,
                approvals: self.approvals.clone(),
                upstreams,
                audit: self.audit.clone(),
            }) as Arc<dyn toolgate_admin::MetricsSource>
        });
        crate::admin::start_admin(
            admin,
            self.approvals.clone(),
            events,
            Some(Arc::new(toolgate_console::Console::new(
                console,
                toolgate_console::OnDisk {
                    policy_files,
                    audit_dir: self.audit_dir.clone(),
                },
            ))),
            shutdown,
            metrics,
        )
        .await
    }

    /// Whether pins admit a tool while their store is unreachable.
    pub fn pins_fail_open(&self) -> bool {
        self.state.fail == toolgate_policy::FailMode::Open
    }
}
