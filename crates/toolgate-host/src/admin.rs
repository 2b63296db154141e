//! The admin API's settings: what the user gave (`--admin-listen`,
//! `--admin-token-env`, `--webhook-url`, `--webhook-secret-env`, shared by
//! `toolgate run`, `serve` and `ui`) combined with a config's `admin`
//! section into [`AdminOptions`] (a flag overrides the config field it
//! names); the approval events a gateway sends; starting the listener.

use anyhow::{bail, Result};
use std::net::SocketAddr;
use toolgate_admin::{AdminOptions, Webhook};
use toolgate_config::{hash_token, AdminConfig};

pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "TOOLGATE_ADMIN_TOKEN";
pub const DEFAULT_WEBHOOK_SECRET_ENV: &str = "TOOLGATE_WEBHOOK_SECRET";
/// The shortest admin token accepted from the environment.
const MIN_TOKEN_CHARS: usize = 16;

/// The admin flags as the user wrote them (`None`: not given).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminFlags {
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

/// The admin API's settings from the flags and the config's `admin`
/// section; `None` when neither asks for an admin listener. Reads the
/// token and the secret from `env` ([`crate::process_env`]).
pub fn admin_options(
    args: &AdminFlags,
    config: Option<&AdminConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<AdminOptions>> {
    let Some(listen) = args.admin_listen.or(config.map(|c| c.listen)) else {
        for (given, flag) in [
            (args.admin_token_env.is_some(), "--admin-token-env"),
            (args.webhook_url.is_some(), "--webhook-url"),
            (args.webhook_secret_env.is_some(), "--webhook-secret-env"),
        ] {
            if given {
                bail!("{flag} needs an admin listener: add --admin-listen ADDR (or an admin section to the config)");
            }
        }
        return Ok(None);
    };
    let token_sha256 = match (&args.admin_token_env, config) {
        (None, Some(config)) => config.token_sha256,
        (var, _) => {
            let var = var.as_deref().unwrap_or(DEFAULT_ADMIN_TOKEN_ENV);
            let token = read_env(env, var, "the admin API's bearer token")?;
            if token.chars().count() < MIN_TOKEN_CHARS {
                bail!(
                    "the admin token in {var} is too short ({} characters; use at least {MIN_TOKEN_CHARS}, such as a token from `toolgate grant new`)",
                    token.chars().count()
                );
            }
            hash_token(&token)
        }
    };
    let from_config = config.and_then(|c| c.webhook.as_ref());
    let url = match (&args.webhook_url, from_config) {
        (Some(url), _) => {
            check_webhook_url(url)?;
            url.clone()
        }
        (None, Some(hook)) => hook.url.clone(),
        (None, None) => {
            if args.webhook_secret_env.is_some() {
                bail!("--webhook-secret-env needs a webhook: add --webhook-url URL (or admin.webhook to the config)");
            }
            return Ok(Some(AdminOptions {
                listen,
                token_sha256,
                webhook: None,
            }));
        }
    };
    let secret = match (&args.webhook_secret_env, from_config) {
        (None, Some(hook)) => hook.secret.expose().to_string(),
        (var, _) => read_env(
            env,
            var.as_deref().unwrap_or(DEFAULT_WEBHOOK_SECRET_ENV),
            "the webhook secret",
        )?,
    };
    let admin_url = from_config
        .and_then(|hook| hook.admin_url.clone())
        .unwrap_or_else(|| format!("http://{listen}"));
    let mut webhook = Webhook::new(url, secret, admin_url);
    if let Some(hook) = from_config {
        webhook.max_attempts = hook.max_attempts;
        webhook.initial_backoff = hook.initial_backoff;
    }
    Ok(Some(AdminOptions {
        listen,
        token_sha256,
        webhook: Some(webhook),
    }))
}

fn read_env(env: &dyn Fn(&str) -> Option<String>, var: &str, what: &str) -> Result<String> {
    match env(var) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Some(_) => bail!("environment variable {var} is empty (it holds {what})"),
        None => bail!("environment variable {var} is not set (it holds {what})"),
    }
}

/// The same rule as the config's `admin.webhook.url`: http:// with a host.
fn check_webhook_url(url: &str) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        bail!("--webhook-url {url:?}: https is not supported yet (use http:// on a trusted network, or a local TLS proxy)");
    }
    let host = lower
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    if host.is_empty() || host.starts_with(':') || url.chars().any(char::is_whitespace) {
        bail!("--webhook-url must be an http:// URL with a host, found {url:?}");
    }
    Ok(())
}

/// The approval events of a gateway: the audit trail, and the webhook when
/// one is configured. Call inside a tokio runtime (the webhook sends from a task).
pub fn approval_events(
    admin: Option<&AdminOptions>,
    audit: &toolgate_audit::AuditSink,
) -> std::sync::Arc<dyn toolgate_approvals::ApprovalEvents> {
    let recorder: std::sync::Arc<dyn toolgate_approvals::ApprovalEvents> =
        std::sync::Arc::new(toolgate_serve::AuditApprovals(audit.clone()));
    match admin.and_then(|a| a.webhook.clone()) {
        Some(webhook) => {
            let log = audit.clone();
            std::sync::Arc::new(toolgate_admin::WebhookNotifier::with_log(
                webhook,
                recorder,
                move |line| log.log(toolgate_audit::LogLevel::Warn, &line),
            ))
        }
        None => recorder,
    }
}

/// Binds the admin listener and serves the admin API (and the dashboard,
/// with a `console`) on the current runtime until `shutdown`; says where on
/// stderr.
pub async fn start_admin(
    opts: AdminOptions,
    store: std::sync::Arc<dyn toolgate_approvals::ApprovalStore>,
    events: std::sync::Arc<dyn toolgate_approvals::ApprovalEvents>,
    console: Option<std::sync::Arc<toolgate_console::Console>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    metrics: Option<std::sync::Arc<dyn toolgate_admin::MetricsSource>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for the admin API: {e}", opts.listen))?;
    let local = listener.local_addr()?;
    eprintln!("toolgate: admin API listening on {local}");
    if console.is_some() {
        eprintln!("toolgate: dashboard on http://{local}/");
    }
    tokio::spawn(toolgate_admin::serve_admin_with_console(
        store, events, opts, console, metrics, listener, shutdown,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use toolgate_config::{Secret, WebhookConfig};

    const TOKEN: &str = "a-long-admin-token-123";

    fn env(name: &str) -> Option<String> {
        match name {
            "TOOLGATE_ADMIN_TOKEN" => Some(TOKEN.into()),
            "OTHER_TOKEN" => Some("another-long-admin-token".into()),
            "SHORT" => Some("abc".into()),
            "BLANK" => Some("  ".into()),
            "TOOLGATE_WEBHOOK_SECRET" => Some("env-secret".into()),
            "HOOK" => Some("hook-secret".into()),
            _ => None,
        }
    }

    fn options(flags: &[&str], config: Option<&AdminConfig>) -> Result<Option<AdminOptions>> {
        let mut args = AdminFlags::default();
        for pair in flags.chunks(2) {
            let value = Some(pair[1].to_string());
            match pair[0] {
                "--admin-listen" => args.admin_listen = Some(pair[1].parse().unwrap()),
                "--admin-token-env" => args.admin_token_env = value,
                "--webhook-url" => args.webhook_url = value,
                "--webhook-secret-env" => args.webhook_secret_env = value,
                other => panic!("unknown flag {other}"),
            }
        }
        admin_options(&args, config, &env)
    }

    fn error(flags: &[&str], config: Option<&AdminConfig>) -> String {
        options(flags, config).unwrap_err().to_string()
    }

    fn config(webhook: bool) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:9191".parse().unwrap(),
            token_sha256: [9; 32],
            webhook: webhook.then(|| WebhookConfig {
                url: "http://chat.internal/hook".into(),
                secret: Secret::new("config-secret"),
                max_attempts: 3,
                initial_backoff: Duration::from_millis(250),
                admin_url: None,
            }),
        }
    }

    #[test]
    fn no_listener_no_admin_api() {
        assert!(options(&[], None).unwrap().is_none());
        for flags in [
            &["--admin-token-env", "OTHER_TOKEN"][..],
            &["--webhook-url", "http://h/x"],
            &["--webhook-secret-env", "HOOK"],
        ] {
            assert!(
                error(flags, None).contains("needs an admin listener: add --admin-listen ADDR"),
                "{flags:?}"
            );
        }
    }

    #[test]
    fn flags_alone_read_the_token_from_the_environment() {
        let opts = options(&["--admin-listen", "127.0.0.1:8081"], None)
            .unwrap()
            .unwrap();
        assert_eq!(opts.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(opts.token_sha256, hash_token(TOKEN));
        assert!(opts.webhook.is_none());
        let opts = options(
            &[
                "--admin-listen",
                "[::1]:1",
                "--admin-token-env",
                "OTHER_TOKEN",
            ],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(opts.token_sha256, hash_token("another-long-admin-token"));
    }

    #[test]
    fn token_problems() {
        let listen = ["--admin-listen", "127.0.0.1:8081", "--admin-token-env"];
        assert_eq!(
            error(&[&listen[..], &["NOPE"]].concat(), None),
            "environment variable NOPE is not set (it holds the admin API's bearer token)"
        );
        assert_eq!(
            error(&[&listen[..], &["BLANK"]].concat(), None),
            "environment variable BLANK is empty (it holds the admin API's bearer token)"
        );
        assert!(error(&[&listen[..], &["SHORT"]].concat(), None)
            .starts_with("the admin token in SHORT is too short (3 characters; use at least 16"));
        let no_default = admin_options(
            &AdminFlags {
                admin_listen: Some("127.0.0.1:8081".parse().unwrap()),
                ..AdminFlags::default()
            },
            None,
            &|_| None,
        );
        assert_eq!(
            no_default.unwrap_err().to_string(),
            "environment variable TOOLGATE_ADMIN_TOKEN is not set (it holds the admin API's bearer token)"
        );
    }

    #[test]
    fn the_config_section_alone() {
        let opts = options(&[], Some(&config(true))).unwrap().unwrap();
        assert_eq!(opts.listen, "127.0.0.1:9191".parse().unwrap());
        // The config's hash, although TOOLGATE_ADMIN_TOKEN is set.
        assert_eq!(opts.token_sha256, [9; 32]);
        let hook = opts.webhook.unwrap();
        assert_eq!(hook.url, "http://chat.internal/hook");
        assert_eq!(hook.secret, "config-secret");
        assert_eq!(hook.max_attempts, 3);
        assert_eq!(hook.initial_backoff, Duration::from_millis(250));
        assert_eq!(hook.admin_url, "http://127.0.0.1:9191");
    }

    #[test]
    fn flags_override_the_config() {
        let opts = options(
            &[
                "--admin-listen",
                "127.0.0.1:7000",
                "--admin-token-env",
                "OTHER_TOKEN",
                "--webhook-url",
                "http://other/hook",
                "--webhook-secret-env",
                "HOOK",
            ],
            Some(&config(true)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(opts.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(opts.token_sha256, hash_token("another-long-admin-token"));
        let hook = opts.webhook.unwrap();
        assert_eq!(
            (hook.url.as_str(), hook.secret.as_str()),
            ("http://other/hook", "hook-secret")
        );
        assert_eq!(hook.admin_url, "http://127.0.0.1:7000");
        assert_eq!(hook.max_attempts, 3);

        // A webhook URL given as a flag, to a config without a webhook:
        // the secret from TOOLGATE_WEBHOOK_SECRET, the default retries.
        let opts = options(&["--webhook-url", "http://h:9/x"], Some(&config(false)))
            .unwrap()
            .unwrap();
        let hook = opts.webhook.unwrap();
        assert_eq!(hook.secret, "env-secret");
        assert_eq!(hook.max_attempts, 5);
        assert_eq!(hook.initial_backoff, Duration::from_secs(1));
    }

    #[test]
    fn webhook_problems() {
        let listen = ["--admin-listen", "127.0.0.1:8081"];
        for (url, message) in [
            ("https://chat.example/hook", "https is not supported yet"),
            ("ftp://x", "must be an http:// URL with a host"),
            ("http://", "must be an http:// URL with a host"),
            ("http://:80/x", "must be an http:// URL with a host"),
        ] {
            let found = error(&[&listen[..], &["--webhook-url", url]].concat(), None);
            assert!(found.contains(message), "{url}: {found}");
        }
        assert_eq!(
            error(
                &[
                    &listen[..],
                    &[
                        "--webhook-url",
                        "http://h/x",
                        "--webhook-secret-env",
                        "NOPE"
                    ]
                ]
                .concat(),
                None
            ),
            "environment variable NOPE is not set (it holds the webhook secret)"
        );
        assert!(error(
            &[&listen[..], &["--webhook-secret-env", "HOOK"]].concat(),
            None
        )
        .starts_with("--webhook-secret-env needs a webhook"));
    }
}
