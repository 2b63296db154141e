//! `toolgate serve`: wires the HTTP gateway (toolgate-serve) to its
//! upstreams, policies and grants, from the command line or a config file.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toolgate_gateway::audit::{AuditSink, LogLevel};
use toolgate_gateway::SystemClock;
use toolgate_serve::{
    serve, Gateway, GatewayOptions, GrantOptions, HttpOptions, ServerOptions, SessionKey,
};
use toolgate_upstream::{Backoff, Transport, UpstreamSpec};

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
    /// Append one JSON line per tool-call decision to this file.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Record the raw arguments of each call in the audit file.
    #[arg(long)]
    audit_args: bool,
    /// error, warn, info (a line per decision) or debug.
    #[arg(long, default_value = "warn")]
    log_level: LogLevel,
    /// Environment variable holding the 32-byte session key (64 hex digits);
    /// gateways sharing it can continue each other's sessions.
    #[arg(long, default_value = "TOOLGATE_SESSION_KEY")]
    session_key_env: String,
    /// Threads serving client connections, each connection on one of them
    /// start to end [default: one per CPU]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
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
    /// The MCP server command and its arguments (one stdio server).
    #[arg(last = true)]
    command: Vec<String>,
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

fn plan_from_args(args: &ServeArgs) -> Result<Plan> {
    let Some(policy_path) = &args.policy else {
        bail!("give --config FILE, or --policy FILE with --upstream URL or -- COMMAND [ARGS...]");
    };
    let policy = match crate::cli::load_policy(policy_path) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("{e}");
            bail!("refusing to start with an invalid policy");
        }
    };
    let transport = match (&args.upstream, args.command.is_empty()) {
        (Some(url), true) => Transport::Http {
            url: url.clone(),
            headers: Vec::new(),
            protocol: toolgate_upstream::Protocol::Auto,
        },
        (None, false) => Transport::Stdio {
            command: args.command[0].clone(),
            args: args.command[1..].to_vec(),
            env: Vec::new(),
            cwd: None,
        },
        _ => bail!("give the server: --upstream URL or -- COMMAND [ARGS...]"),
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
        admin: crate::admin_args::admin_options(&args.admin, None)?,
        otlp: crate::telemetry_args::otlp_settings(&args.telemetry, None)?,
        policy_files: vec![toolgate_console::PolicyFile {
            path: policy_path.clone(),
            scope: toolgate_console::Scope::Gateway,
        }],
    })
}

fn plan_from_config(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    state_args: &crate::state::StateArgs,
    admin_args: &crate::admin_args::AdminArgs,
    telemetry_args: &crate::telemetry_args::TelemetryArgs,
) -> Result<Plan> {
    let config = match toolgate_config::load_config(path, &|name| std::env::var(name).ok()) {
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
            let transport = crate::scan::transport_of(&s.transport);
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
        admin: crate::admin_args::admin_options(admin_args, config.admin.as_ref())?,
        otlp: crate::telemetry_args::otlp_settings(telemetry_args, Some(&config.telemetry))?,
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

pub fn run(args: ServeArgs) -> Result<u8> {
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
    // Metrics with the admin API; traces when a collector is configured.
    let (telemetry, observer) = match crate::telemetry_args::start(
        plan.admin.is_some(),
        plan.otlp.clone(),
        "",
        args.log_level,
    )? {
        Some((telemetry, observer)) => (Some(telemetry), Some(observer)),
        None => (None, None),
    };
    let audit = crate::audit_cmd::open_sink_observed(
        args.audit.as_deref(),
        args.log_level,
        crate::state::audit_dir(&plan.state).as_deref(),
        observer,
    )?;
    crate::audit_cmd::audit_retention(
        crate::state::audit_dir(&plan.state).as_deref(),
        args.audit_retention.as_deref(),
        &audit,
    )?;
    // Each serving thread runs a single-threaded runtime and serves its
    // connections start to end (see `toolgate_serve::http`); this one also
    // runs the upstreams, the admin API and the reloads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_until_signal(plan, audit, telemetry, args))
}

async fn serve_until_signal(
    plan: Plan,
    audit: AuditSink,
    telemetry: Option<crate::telemetry_args::Telemetry>,
    args: ServeArgs,
) -> Result<u8> {
    // Handlers first: a signal during start-up (servers can take seconds to
    // come up) stops the gateway too.
    let stop = Shutdown::listen()?;
    let Plan {
        gateway: g,
        http,
        state,
        admin,
        otlp: _,
        policy_files,
    } = plan;
    let store = crate::state::open_store(&state)?;
    let approvals = crate::state::open_approvals(&state)?;
    let approval_events = crate::admin_args::approval_events(admin.as_ref(), &audit);
    // The admin API starts first; the upstreams' health is known once the
    // gateway has started.
    let started = Arc::new(std::sync::OnceLock::new());
    let metrics = telemetry.map(|telemetry| {
        Arc::new(crate::telemetry_args::GatewayMetrics {
            telemetry,
            approvals: approvals.clone(),
            upstreams: crate::telemetry_args::serve_upstreams(started.clone()),
        }) as Arc<dyn toolgate_admin::MetricsSource>
    });
    let reloads = crate::console::Reloads::new();
    let console = Arc::new(crate::console::ServeConsole {
        gateway: std::sync::OnceLock::new(),
        servers: g.servers.iter().map(|s| s.name.clone()).collect(),
        files: policy_files,
        audit_dir: crate::state::audit_dir(&state),
        reloads: reloads.clone(),
    });
    if let Some(admin) = admin {
        crate::admin_args::start_admin(
            admin,
            approvals.clone(),
            approval_events.clone(),
            Some(Arc::new(toolgate_console::Console::new(console.clone()))),
            stop.wait(),
            metrics,
        )
        .await?;
    }
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
        policy: g.policy,
        grants: g.grants,
        session_key: key,
        session_ttl: g.session_ttl,
        store,
        clock: Arc::new(SystemClock),
        audit: audit.clone(),
        audit_args: args.audit_args,
        startup_timeout: Duration::from_secs(30),
        approvals,
        approval_events,
        pins: crate::state::open_pins(&state)?,
        pins_fail_open: state.fail == toolgate_policy::FailMode::Open,
        revocations: crate::state::open_revocations(&state)?,
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
    } else if let Some(path) = args.policy.clone() {
        tokio::spawn(watch_policy(gateway.clone(), path, audit.clone(), reloads));
    }
    eprintln!("toolgate serve: listening on {local} (MCP endpoint http://{local}/mcp)");
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

/// SIGINT and SIGTERM, listened for from the moment [`Shutdown::listen`] is
/// called (a handler installed only when a future is first polled would let
/// an early signal go unseen once another handler exists).
#[derive(Clone)]
pub(crate) struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Installs the handlers now; needs a runtime.
    pub(crate) fn listen() -> Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    /// Resolves once a signal came (at once if one already did).
    pub(crate) fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

/// The files a config's meaning depends on: itself and the policies it names.
fn config_files(path: &std::path::Path, config: &toolgate_config::Config) -> Vec<PathBuf> {
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
    let load = |p: &PathBuf| toolgate_config::load_config(p, &|name| std::env::var(name).ok());
    let Ok(mut current) = load(&path) else { return };
    let mut files = config_files(&path, &current);
    let stamps = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| toolgate_gateway::reload::stamp(f))
            .collect::<Vec<_>>()
    };
    let mut last = stamps(&files);
    loop {
        // A save in the dashboard pokes: reload now, whatever the stamps say.
        let poked = reloads.wait(toolgate_gateway::reload::POLL).await;
        let now = stamps(&files);
        if now == last && !poked {
            continue;
        }
        last = now;
        let reload = reloads.begin();
        match load(&path) {
            Ok(config) => {
                gateway.set_grants(grants_of(&config));
                let servers: Vec<_> = config
                    .servers
                    .iter()
                    .map(|s| (s.name.clone(), s.policy.as_ref().map(|p| p.policy.clone())))
                    .collect();
                gateway.set_policies(config.policy.as_ref().map(|p| p.policy.clone()), &servers);
                let restart: Vec<&str> = [
                    (
                        "servers",
                        format!(
                            "{:?}",
                            config
                                .servers
                                .iter()
                                .map(|s| (&s.name, &s.transport, &s.prefix, s.per_session))
                                .collect::<Vec<_>>()
                        ) != format!(
                            "{:?}",
                            current
                                .servers
                                .iter()
                                .map(|s| (&s.name, &s.transport, &s.prefix, s.per_session))
                                .collect::<Vec<_>>()
                        ),
                    ),
                    ("listen", config.listen != current.listen),
                    ("separator", config.separator != current.separator),
                    (
                        "sessions",
                        config.session_key != current.session_key
                            || config.session_max_age != current.session_max_age,
                    ),
                    (
                        "http",
                        format!("{:?}", config.http) != format!("{:?}", current.http),
                    ),
                    ("state", config.state != current.state),
                ]
                .into_iter()
                .filter(|(_, changed)| *changed)
                .map(|(what, _)| what)
                .collect();
                audit.log(
                    LogLevel::Warn,
                    &format!("reloaded grants and policies from {}", path.display()),
                );
                if !restart.is_empty() {
                    audit.log(
                        LogLevel::Warn,
                        &format!(
                            "changes to {} take effect at the next restart",
                            restart.join(", ")
                        ),
                    );
                }
                files = config_files(&path, &config);
                last = stamps(&files);
                current = config;
                reloads.finished(reload, None);
            }
            Err(d) => {
                audit.log(
                    LogLevel::Error,
                    &format!(
                        "{d}\nthe edited config {} is invalid; the previous config stays in force",
                        path.display()
                    ),
                );
                reloads.finished(reload, Some(d.to_string()));
            }
        }
    }
}

/// Hot reload of the one policy of `serve --policy FILE`.
async fn watch_policy(
    gateway: Arc<Gateway>,
    path: PathBuf,
    audit: AuditSink,
    reloads: Arc<crate::console::Reloads>,
) {
    let mut last = toolgate_gateway::reload::stamp(&path);
    loop {
        let poked = reloads.wait(toolgate_gateway::reload::POLL).await;
        let now = toolgate_gateway::reload::stamp(&path);
        if now == last && !poked {
            continue;
        }
        last = now;
        let reload = reloads.begin();
        match toolgate_gateway::reload::load_policy_file(&path) {
            Ok(policy) => {
                gateway.set_policies(Some(Arc::new(policy)), &[]);
                audit.log(
                    LogLevel::Warn,
                    &format!("reloaded the policy from {}", path.display()),
                );
                reloads.finished(reload, None);
            }
            Err(problems) => {
                audit.log(
                    LogLevel::Error,
                    &format!("{problems}\nthe edited policy {} is invalid; the previous policy stays in force", path.display()),
                );
                reloads.finished(reload, Some(problems));
            }
        }
    }
}
