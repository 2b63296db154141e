//! The validated config: types that cannot hold a value the validator
//! refused. Built only by `validate`; secrets never show in `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validated gateway config. Build one with [`crate::load_config`] or
/// [`crate::parse_config`].
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The gateway policy (names tools by their gateway names).
    pub policy: Option<LoadedPolicy>,
    /// Between a server's prefix and its tool names: `everything__echo`.
    pub separator: String,
    /// In the order of the file; at least one.
    pub servers: Vec<ServerConfig>,
    /// In the order of the file; token hashes are distinct.
    pub grants: Vec<GrantConfig>,
    /// The session-sealing key, when its variable is set (else the binary
    /// uses a random per-process key).
    pub session_key: Option<[u8; 32]>,
    pub session_max_age: Duration,
    pub http: HttpConfig,
    /// Where counters live.
    pub state: StateConfig,
    /// The admin API (out-of-band approvers); `None`: no admin listener.
    pub admin: Option<AdminConfig>,
    /// Traces (docs/observability.md); the default exports none.
    pub telemetry: TelemetryConfig,
}

/// The `telemetry` section: where the gateway's spans go.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// The `service.name` of the spans (`None`: `OTEL_SERVICE_NAME`, else
    /// "toolgate").
    pub service_name: Option<String>,
    /// `None`: the `OTEL_EXPORTER_OTLP_*` variables decide (no export
    /// when they are unset).
    pub otlp: Option<OtlpConfig>,
}

/// An OTLP/HTTP collector.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's base URL (http://); spans go to `<endpoint>/v1/traces`.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Extra request headers; values `${VAR}`-interpolated.
    pub headers: Vec<(String, Secret)>,
}

/// How spans are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// The admin API: its own listener, always behind a token.
#[derive(Clone)]
pub struct AdminConfig {
    /// Default 127.0.0.1:8081; never the gateway's own address.
    pub listen: SocketAddr,
    /// SHA-256 of the admin bearer token (no grant has the same).
    pub token_sha256: [u8; 32],
    pub webhook: Option<WebhookConfig>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token_sha256", &hex::encode(self.token_sha256))
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// Where new approval requests are announced, and the secret that signs
/// them and the callbacks.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// An http:// URL.
    pub url: String,
    /// Read from the variable `secret_env` names (set and non-empty).
    pub secret: Secret,
    /// 1 to 20 (default 5).
    pub max_attempts: u32,
    /// Longer than zero (default 1 s).
    pub initial_backoff: Duration,
    /// The admin API's base URL as the receiver reaches it, no trailing
    /// slash (`None`: `http://<admin listen>`).
    pub admin_url: Option<String>,
}

/// Where counters (and the audit trail) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub store: StateStore,
    /// For the embedded store (`None`: the default data directory).
    pub data_dir: Option<PathBuf>,
    /// For Redis: every key starts with it (one per deployment).
    pub prefix: String,
    pub fail: toolgate_policy::FailMode,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            store: StateStore::Embedded,
            data_dir: None,
            prefix: "toolgate".into(),
            fail: toolgate_policy::FailMode::Closed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    /// A database in the data directory (the default).
    Embedded,
    /// In memory: forgotten when the gateway stops.
    Memory,
    /// `redis://HOST:PORT/DB`, shared by replicas.
    Redis(String),
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("policy", &self.policy)
            .field("separator", &self.separator)
            .field("servers", &self.servers)
            .field("grants", &self.grants)
            .field("session_key", &self.session_key.map(|_| Redacted))
            .field("session_max_age", &self.session_max_age)
            .field("http", &self.http)
            .field("state", &self.state)
            .field("admin", &self.admin)
            .field("telemetry", &self.telemetry)
            .finish()
    }
}

/// Prints `***` in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A policy file named by the config, read and validated.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The file, as resolved against the config file's directory.
    pub path: PathBuf,
    pub policy: Arc<toolgate_policy::Policy>,
}

/// One upstream MCP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `[A-Za-z0-9_-]{1,64}`, unique.
    pub name: String,
    pub transport: ServerTransport,
    /// The prefix of this server's tools' gateway names; `None`: the
    /// server's own names. Distinct among the servers that have one.
    pub prefix: Option<String>,
    /// Run one instance per client session.
    pub per_session: bool,
    /// A policy naming the server's own tool names.
    pub policy: Option<LoadedPolicy>,
    pub request_timeout: Duration,
    /// Backoff for a dying stdio server: first delay, and its cap
    /// (`restart_initial <= restart_max`).
    pub restart_initial: Duration,
    pub restart_max: Duration,
}

/// How the gateway reaches a server.
#[derive(Debug, Clone)]
pub enum ServerTransport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        /// `${VAR}` already resolved.
        env: Vec<(String, Secret)>,
        /// Resolved against the config file's directory.
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP (`url` is http:// or https://).
    Http {
        url: String,
        /// `${VAR}` already resolved; names are valid header names.
        headers: Vec<(String, Secret)>,
        /// Which protocol generation to speak (`protocol`).
        protocol: UpstreamProtocol,
    },
    /// The legacy HTTP+SSE transport.
    Sse {
        url: String,
        headers: Vec<(String, Secret)>,
    },
}

/// A Streamable HTTP server's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// `auto`: the 2025-11-25 handshake, or 2026-07-28 when the server
    /// refuses the handshake as a modern-only server.
    #[default]
    Auto,
    /// `2025-11-25`: the handshake only.
    Handshake,
    /// `2026-07-28`: stateless only, no `initialize`.
    Stateless,
}

/// A value that must not be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (a header, a
    /// child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An agent credential: who may connect, under which policy, to which servers.
#[derive(Clone)]
pub struct GrantConfig {
    /// `[A-Za-z0-9_-]{1,64}`, unique.
    pub name: String,
    /// SHA-256 of the bearer token (see [`crate::hash_token`]).
    pub token_sha256: [u8; 32],
    /// Used instead of the top-level policy for this grant.
    pub policy: Option<LoadedPolicy>,
    /// The servers this grant may reach (each a configured server); `None`: all.
    pub servers: Option<Vec<String>>,
}

impl fmt::Debug for GrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantConfig")
            .field("name", &self.name)
            .field("token_sha256", &hex::encode(self.token_sha256))
            .field("policy", &self.policy)
            .field("servers", &self.servers)
            .finish()
    }
}

/// The HTTP listener's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Exact origins, lower case, default ports omitted: `https://app.example.com`.
    pub allowed_origins: Vec<String>,
    /// `host[:port]`, lower case, accepted besides the loopback names.
    pub allowed_hosts: Vec<String>,
    pub max_message_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}
