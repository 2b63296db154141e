//! `toolgate serve`: the HTTP gateway (toolgate-serve) wired to its
//! upstreams, policies and grants, from the command line or a config file,
//! with its config or policy watched for hot reload.

use crate::host::{Host, HostOptions};
use crate::shutdown::Shutdown;
use crate::watch::{watch, Watch};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toolgate_audit::{AuditSink, LogLevel};
use toolgate_clock::SystemClock;
use toolgate_serve::{
    serve, Gateway, GatewayOptions, GrantOptions, HttpOptions, ServerOptions, SessionKey,
};
use toolgate_upstream::{Backoff, Transport, UpstreamSpec};

/// `toolgate serve` as the user asked for it.
#[derive(Debug, Clone)]
pub struct ServeFlags {
    /// The gateway config file (then not `policy`, `upstream`, `command`).
    pub config: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub upstream: Option<String>,
    pub listen: Option<SocketAddr>,
    pub audit: Option<PathBuf>,
    pub audit_args: bool,
    pub log_level: LogLevel,
    /// The variable holding the 32-byte session key (64 hex digits).
    pub session_key_env: String,
    /// Threads serving client connections (`None`: one per CPU).
    pub workers: Option<u16>,
    pub state: crate::stores::StateFlags,
    pub admin: crate::admin::AdminFlags,
    pub telemetry: crate::telemetry::TelemetryFlags,
    pub audit_retention: Option<String>,
    pub audit_when_full: toolgate_audit::WhenFull,
    pub command: Vec<String>,
}

fn session_key(var: &str) -> Result<Option<[u8; 32]>> {
    match std::env::var(var) {
        Ok(hex_key) => {
            let bytes = hex::decode(hex_key.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .with_context(|| format!("{var} must hold 64 hex digits (32 bytes)"))?;
            Ok(Some(bytes.try_into().expect("32 bytes")))
        }
        Err(_) => Ok(None),
    }
}

struct Plan {
    gateway: GatewayOptionsParts,
    http: HttpOptions,
    state: toolgate_config::StateConfig,
    admin: Option<toolgate_admin::AdminOptions>,
    /// Where spans go (`None`: no traces).
    otlp: Option<toolgate_telemetry::OtlpSettings>,
    /// The dashboard's editable policy files.
    policy_files: Vec<toolgate_console::PolicyFile>,
}

struct GatewayOptionsParts {
    servers: Vec<ServerOptions>,
    separator: String,
    policy: Option<Arc<toolgate_policy::Policy>>,
    grants: Vec<GrantOptions>,
    session_key: Option<[u8; 32]>,
    session_ttl: Duration,
}

fn plan_from_args(args: &ServeFlags) -> Result<Plan> {
    let Some(policy_path) = &args.policy else {
        bail!("give --config FILE, or --policy FILE with --upstream URL or -- COMMAND [ARGS...]");
    };
    let policy = match crate::policy::load_policy(policy_path) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("{e}");
            bail!("refusing to start with an invalid policy");
        }
    };
    let Some(transport) = crate::upstreams::one_server(args.upstream.as_deref(), &args.command)
    else {
        bail!("give the server: --upstream URL or -- COMMAND [ARGS...]");
    };
    let listen = args
        .listen
        .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("address"));
    if !listen.ip().is_loopback() {
        bail!("a non-loopback listen address needs grants: use --config with a `grants` section");
    }
    Ok(Plan {
        gateway: GatewayOptionsParts {
            servers: vec![ServerOptions {
                name: "server".into(),
                prefix: None,
                policy: None,
                spec: UpstreamSpec {
                    name: "server".into(),
                    transport,
                    backoff: Backoff::default(),
                    request_timeout: Duration::from_secs(60),
                },
                per_session: false,
            }],
            separator: "__".into(),
            policy: Some(policy),
            grants: Vec::new(),
            session_key: session_key(&args.session_key_env)?,
            session_ttl: Duration::from_secs(24 * 3600),
        },
        http: HttpOptions {
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(10),
            listen,
            workers: 1,
        },
        state: args.state.resolve(None)?,
        admin: crate::admin::admin_options(&args.admin, None, &crate::process_env)?,
        otlp: crate::telemetry::otlp_settings(&args.telemetry, None, &crate::process_env)?,
        policy_files: vec![toolgate_console::PolicyFile {
            path: policy_path.clone(),
            scope: toolgate_console::Scope::Gateway,
        }],
    })
}

fn plan_from_config(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    state_args: &crate::stores::StateFlags,
    admin_args: &crate::admin::AdminFlags,
    telemetry_args: &crate::telemetry::TelemetryFlags,
) -> Result<Plan> {
    let config = match toolgate_config::load_config(path, &crate::process_env) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            bail!("refusing to start with an invalid config");
        }
    };
    let servers = config
        .servers
        .iter()
        .map(|s| {
            let transport = crate::upstreams::transport_of(&s.transport);
            ServerOptions {
                name: s.name.clone(),
                prefix: s.prefix.clone(),
                policy: s.policy.as_ref().map(|p| p.policy.clone()),
                spec: UpstreamSpec {
                    name: s.name.clone(),
                    transport,
                    backoff: Backoff {
                        initial: s.restart_initial,
                        max: s.restart_max,
                    },
                    request_timeout: s.request_timeout,
                },
                per_session: s.per_session,
            }
        })
        .collect();
    let listen = listen.unwrap_or(config.listen);
    if !listen.ip().is_loopback() && config.grants.is_empty() {
        bail!("a non-loopback listen address needs grants (add a `grants` section)");
    }
    Ok(Plan {
        gateway: GatewayOptionsParts {
            servers,
            separator: config.separator.clone(),
            policy: config.policy.as_ref().map(|p| p.policy.clone()),
            grants: grants_of(&config),
            session_key: config.session_key,
            session_ttl: config.session_max_age,
        },
        http: HttpOptions {
            allowed_origins: config.http.allowed_origins.clone(),
            allowed_hosts: config.http.allowed_hosts.clone(),
            max_message_bytes: config.http.max_message_bytes,
            request_timeout: config.http.request_timeout,
            shutdown_grace: config.http.shutdown_grace,
            listen,
            workers: 1,
        },
        state: state_args.resolve(Some(&config.state))?,
        admin: crate::admin::admin_options(admin_args, config.admin.as_ref(), &crate::process_env)?,
        otlp: crate::telemetry::otlp_settings(
            telemetry_args,
            Some(&config.telemetry),
            &crate::process_env,
        )?,
        policy_files: crate::console::config_policy_files(&config),
    })
}

fn grants_of(config: &toolgate_config::Config) -> Vec<GrantOptions> {
    config
        .grants
        .iter()
        .map(|g| GrantOptions {
            name: g.name.clone(),
            token_sha256: g.token_sha256,
            policy: g.policy.as_ref().map(|p| p.policy.clone()),
            servers: g.servers.clone(),
        })
        .collect()
}

/// Serves until SIGINT or SIGTERM; 1 when the flags, the config or the
/// gateway's start fail (said on stderr).
pub fn run(args: ServeFlags) -> Result<u8> {
    let plan = match &args.config {
        Some(path) => {
            plan_from_config(path, args.listen, &args.state, &args.admin, &args.telemetry)
        }
        None => plan_from_args(&args),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("toolgate: {e:#}");
            return Ok(1);
        }
    };
    let Plan {
        gateway,
        http,
        state,
        admin,
        otlp,
        policy_files,
    } = plan;
    let host = Host::open(HostOptions {
        state,
        admin,
        otlp,
        audit_file: args.audit.clone(),
        log_level: args.log_level,
        audit_retention: args.audit_retention.clone(),
        audit_when_full: args.audit_when_full,
        default_server: String::new(),
    })?;
    // Each serving thread runs a single-threaded runtime and serves its
    // connections start to end (see `toolgate_serve::http`); this one also
    // runs the upstreams, the admin API and the reloads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_until_signal(gateway, http, policy_files, host, args))
}

async fn serve_until_signal(
    g: GatewayOptionsParts,
    http: HttpOptions,
    policy_files: Vec<toolgate_console::PolicyFile>,
    mut host: Host,
    args: ServeFlags,
) -> Result<u8> {
    // Handlers first: a signal during start-up (servers can take seconds to
    // come up) stops the gateway too.
    let stop = Shutdown::listen()?;
    let store = crate::stores::open_store(&host.state)?;
    let approval_events = host.approval_events();
    let audit = host.audit.clone();
    // The admin API starts first; the upstreams' health is known once the
    // gateway has started.
    let started = Arc::new(std::sync::OnceLock::new());
    let reloads = crate::console::Reloads::new();
    let console = Arc::new(crate::console::ServeConsole {
        gateway: std::sync::OnceLock::new(),
        servers: g.servers.iter().map(|s| s.name.clone()).collect(),
        reloads: reloads.clone(),
    });
    host.start_admin(
        approval_events.clone(),
        (console.clone(), policy_files),
        crate::telemetry::serve_upstreams(started.clone()),
        stop.wait(),
    )
    .await?;
    let key = match g.session_key {
        Some(key) => SessionKey::new(key),
        None => {
            audit.log(
                LogLevel::Warn,
                &format!(
                    "no session key ({} unset): sessions will not survive a restart or move between gateways",
                    args.session_key_env
                ),
            );
            SessionKey::random()
        }
    };
    if g.grants.is_empty() {
        audit.log(
            LogLevel::Warn,
            "no grants configured: serving loopback only; every client is the anonymous grant",
        );
    }
    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", http.listen))?;
    let local = listener.local_addr()?;
    let starting = Gateway::start(GatewayOptions {
        servers: g.servers,
        separator: g.separator,
        policy: g.policy.clone(),
        grants: g.grants,
        session_key: key,
        session_ttl: g.session_ttl,
        store,
        clock: Arc::new(SystemClock),
        audit: audit.clone(),
        audit_args: args.audit_args,
        startup_timeout: Duration::from_secs(30),
        approvals: host.approvals.clone(),
        approval_events,
        pins: crate::stores::open_pins(&host.state)?,
        pins_fail_open: host.pins_fail_open(),
        revocations: crate::stores::open_revocations(&host.state)?,
    });
    let gateway = tokio::select! {
        gateway = starting => gateway,
        () = stop.wait() => {
            eprintln!("toolgate serve: stopped while starting");
            audit.flush();
            return Ok(0);
        }
    };
    let gateway = match gateway {
        Ok(g) => g,
        Err(e) => {
            eprintln!("toolgate: {e}");
            return Ok(1);
        }
    };
    let _ = started.set(Arc::downgrade(&gateway));
    let _ = console.gateway.set(gateway.clone());
    if let Some(path) = args.config.clone() {
        tokio::spawn(watch_config(gateway.clone(), path, audit.clone(), reloads));
    } else if let (Some(path), Some(policy)) = (args.policy.clone(), g.policy) {
        tokio::spawn(watch_policy(
            gateway.clone(),
            path,
            policy,
            audit.clone(),
            reloads,
        ));
    }
    // One write: a reader of stderr never sees half the address.
    let line = format!("toolgate serve: listening on {local} (MCP endpoint http://{local}/mcp)\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let grace = http.shutdown_grace;
    let http = HttpOptions {
        listen: local,
        workers: args.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get().min(256)),
            usize::from,
        ),
        ..http
    };
    serve(gateway.clone(), listener, http, stop.wait()).await;
    gateway.shutdown(grace.min(Duration::from_secs(5))).await;
    audit.flush();
    Ok(0)
}

/// The files a config's meaning depends on: itself and the policies it names.
fn config_files(path: &Path, config: &toolgate_config::Config) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    let policies = config
        .policy
        .iter()
        .chain(config.servers.iter().filter_map(|s| s.policy.as_ref()))
        .chain(config.grants.iter().filter_map(|g| g.policy.as_ref()));
    for policy in policies {
        if !files.contains(&policy.path) {
            files.push(policy.path.clone());
        }
    }
    files
}

/// What of a config needs a restart to change, each part compared by
/// value: the servers (name, transport, prefix, per-session), `listen`,
/// the separator, the sessions, `http` and `state`.
fn needs_restart(
    old: &toolgate_config::Config,
    new: &toolgate_config::Config,
) -> Vec<&'static str> {
    let servers = |c: &toolgate_config::Config| -> Vec<(String, Transport, Option<String>, bool)> {
        c.servers
            .iter()
            .map(|s| {
                let transport = crate::upstreams::transport_of(&s.transport);
                (s.name.clone(), transport, s.prefix.clone(), s.per_session)
            })
            .collect()
    };
    let http = |c: &toolgate_config::Config| {
        let h = &c.http;
        let limits = (h.max_message_bytes, h.request_timeout, h.shutdown_grace);
        (h.allowed_origins.clone(), h.allowed_hosts.clone(), limits)
    };
    let sessions = |c: &toolgate_config::Config| (c.session_key, c.session_max_age);
    [
        ("servers", servers(old) != servers(new)),
        ("listen", old.listen != new.listen),
        ("separator", old.separator != new.separator),
        ("sessions", sessions(old) != sessions(new)),
        ("http", http(old) != http(new)),
        ("state", old.state != new.state),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect()
}

/// Hot reload: when the config file or a policy file it names changes, the
/// grants (added, rotated, revoked) and every policy are replaced, within a
/// second and without dropping sessions. An invalid edit is logged with its
/// messages and the old config stays in force. Changes to `servers`,
/// `listen`, `http` or `sessions` need a restart (and are reported).
async fn watch_config(
    gateway: Arc<Gateway>,
    path: PathBuf,
    audit: AuditSink,
    reloads: Arc<crate::console::Reloads>,
) {
    let load = |p: &Path| toolgate_config::load_config(p, &crate::process_env);
    let Ok(current) = load(&path) else { return };
    let (log, shown) = (audit.clone(), path.display().to_string());
    let apply = move |old: &toolgate_config::Config, config: &toolgate_config::Config| {
        gateway.set_grants(grants_of(config));
        let servers: Vec<_> = config
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.policy.as_ref().map(|p| p.policy.clone())))
            .collect();
        gateway.set_policies(config.policy.as_ref().map(|p| p.policy.clone()), &servers);
        log.log(
            LogLevel::Warn,
            &format!("reloaded grants and policies from {shown}"),
        );
        let restart = needs_restart(old, config);
        if !restart.is_empty() {
            log.log(
                LogLevel::Warn,
                &format!(
                    "changes to {} take effect at the next restart",
                    restart.join(", ")
                ),
            );
        }
    };
    let shown = path.display().to_string();
    let files_of = path.clone();
    let watched = Watch {
        read: || load(&path),
        files: |config: &toolgate_config::Config| config_files(&files_of, config),
        apply,
        refused: |d: &toolgate_config::Diagnostics| {
            audit.log(
                LogLevel::Error,
                &format!(
                    "{d}\nthe edited config {shown} is invalid; the previous config stays in force"
                ),
            );
        },
    };
    watch(current, reloads, watched).await;
}

/// Hot reload of the one policy of `serve --policy FILE`.
async fn watch_policy(
    gateway: Arc<Gateway>,
    path: PathBuf,
    current: Arc<toolgate_policy::Policy>,
    audit: AuditSink,
    reloads: Arc<crate::console::Reloads>,
) {
    let shown = path.display().to_string();
    let log = audit.clone();
    let watched = Watch {
        read: || toolgate_gateway::reload::load_policy_file(&path).map(Arc::new),
        files: |_: &Arc<toolgate_policy::Policy>| vec![path.clone()],
        apply: |_: &Arc<toolgate_policy::Policy>, policy: &Arc<toolgate_policy::Policy>| {
            gateway.set_policies(Some(policy.clone()), &[]);
            log.log(LogLevel::Warn, &format!("reloaded the policy from {shown}"));
        },
        refused: |problems: &String| {
            audit.log(
                LogLevel::Error,
                &format!("{problems}\nthe edited policy {shown} is invalid; the previous policy stays in force"),
            );
        },
    };
    watch(current, reloads, watched).await;
}
