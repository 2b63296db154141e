//! `toolgate ui`: the dashboard on its own against a data directory or
//! Redis, its servers scanned once at start.

use crate::console::{config_policy_files, UiConsole};
use crate::upstreams::Target;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_console::{Console, PolicyFile, Scope, Server, ServerStatus, Tool};

/// `toolgate ui` as the user asked for it.
#[derive(Debug, Clone)]
pub struct UiFlags {
    /// A gateway config: its servers scanned, its policy files editable.
    pub config: Option<PathBuf>,
    /// A policy file to edit (its server given by `upstream` or `command`).
    pub policy: Option<PathBuf>,
    pub upstream: Option<String>,
    pub listen: SocketAddr,
    pub admin_token_env: Option<String>,
    pub state: crate::stores::StateFlags,
    /// How long to wait for each server to start and list its tools.
    pub timeout: Duration,
    pub command: Vec<String>,
}

pub const DEFAULT_UI_LISTEN: &str = "127.0.0.1:8082";

pub fn run(args: UiFlags) -> Result<u8> {
    match plan_ui(&args) {
        Ok(plan) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve_ui(args, plan))
        }
        Err(e) => {
            eprintln!("toolgate ui: {e:#}");
            Ok(1)
        }
    }
}

struct UiPlan {
    files: Vec<PolicyFile>,
    targets: Vec<Target>,
    separator: String,
    state: toolgate_config::StateConfig,
    admin: toolgate_admin::AdminOptions,
}

/// The admin token's rules are the admin API's (see admin.rs); the
/// address is always `--listen`.
fn ui_admin(
    args: &UiFlags,
    config: Option<&toolgate_config::AdminConfig>,
) -> Result<toolgate_admin::AdminOptions> {
    crate::admin::admin_options(
        &crate::admin::AdminFlags {
            admin_listen: Some(args.listen),
            admin_token_env: args.admin_token_env.clone(),
            ..crate::admin::AdminFlags::default()
        },
        config,
        &crate::process_env,
    )?
    .context("the dashboard needs an admin token")
}

fn plan_ui(args: &UiFlags) -> Result<UiPlan> {
    if let Some(path) = &args.config {
        let config = toolgate_config::load_config(path, &crate::process_env)
            .map_err(|d| anyhow::anyhow!("{d}\ncannot start the dashboard on an invalid config"))?;
        let admin = ui_admin(args, config.admin.as_ref())?;
        return Ok(UiPlan {
            files: config_policy_files(&config),
            targets: crate::upstreams::config_targets(&config),
            separator: config.separator.clone(),
            state: args.state.resolve(Some(&config.state))?,
            admin,
        });
    }
    let admin = ui_admin(args, None)?;
    let Some(policy) = &args.policy else {
        anyhow::bail!("give --config FILE, or --policy FILE (with --upstream URL or -- COMMAND [ARGS...] to list its server's tools)");
    };
    if toolgate_policy::Format::from_path(policy).is_none() {
        anyhow::bail!(
            "{}: unknown policy format (use .json, .yaml or .yml)",
            policy.display()
        );
    }
    let transport = crate::upstreams::one_server(args.upstream.as_deref(), &args.command);
    Ok(UiPlan {
        files: vec![PolicyFile {
            path: policy.clone(),
            scope: Scope::Gateway,
        }],
        targets: transport
            .map(|transport| Target {
                name: "server".into(),
                prefix: None,
                transport,
            })
            .into_iter()
            .collect(),
        separator: "__".into(),
        state: args.state.resolve(None)?,
        admin,
    })
}

async fn serve_ui(args: UiFlags, plan: UiPlan) -> Result<u8> {
    let audit_dir = crate::stores::audit_dir(&plan.state);
    let approvals = crate::stores::open_approvals(&plan.state)?;
    let audit =
        crate::audit::open_sink(None, toolgate_audit::LogLevel::Warn, audit_dir.as_deref())?;
    let events = crate::admin::approval_events(None, &audit);
    let backend = Arc::new(UiConsole {
        servers: Mutex::new(
            plan.targets
                .iter()
                .map(|t| Server {
                    name: t.name.clone(),
                    status: ServerStatus::Scanning,
                    tools: Vec::new(),
                })
                .collect(),
        ),
    });
    let timeout = args.timeout.max(Duration::from_secs(1));
    {
        let backend = backend.clone();
        let targets = plan.targets;
        let separator = plan.separator;
        tokio::spawn(async move {
            let specs = targets
                .iter()
                .map(|t| (t.name.clone(), t.transport.clone()))
                .collect();
            let results = crate::upstreams::list_servers(specs, timeout).await;
            let servers = targets
                .iter()
                .zip(results)
                .map(|(t, result)| match result {
                    Ok(tools) => Server {
                        name: t.name.clone(),
                        status: ServerStatus::Ready,
                        tools: tools
                            .into_iter()
                            .filter_map(|definition| {
                                let original = definition.get("name")?.as_str()?.to_string();
                                let name = toolgate_serve::catalog::gateway_name(
                                    t.prefix.as_deref(),
                                    &separator,
                                    &original,
                                );
                                Some(Tool {
                                    name,
                                    original,
                                    definition,
                                })
                            })
                            .collect(),
                    },
                    Err(why) => Server {
                        name: t.name.clone(),
                        status: ServerStatus::Failed(why),
                        tools: Vec::new(),
                    },
                })
                .collect();
            *backend.servers.lock().expect("servers lock") = servers;
        });
    }
    let on_disk = toolgate_console::OnDisk {
        policy_files: plan.files,
        audit_dir,
    };
    let console = Arc::new(Console::new(backend, on_disk));
    let stop = crate::shutdown::Shutdown::listen()?;
    let listener = tokio::net::TcpListener::bind(plan.admin.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", plan.admin.listen))?;
    let local = listener.local_addr()?;
    eprintln!("toolgate ui: dashboard on http://{local}/");
    toolgate_admin::serve_admin_with_console(
        approvals,
        events,
        plan.admin,
        Some(console),
        // The standalone dashboard runs no gateway: nothing to measure.
        None,
        listener,
        stop.wait(),
    )
    .await;
    audit.flush();
    Ok(0)
}
