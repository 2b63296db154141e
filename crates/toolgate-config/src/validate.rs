//! Validation: the spanned tree of a config → [`Config`], or every problem
//! found, each at the node it is about. Cross-field rules (exactly one
//! transport, distinct prefixes and token hashes, every server covered by a
//! policy, grants for an open listen address) run after the fields, on what
//! the fields declared, so one mistake is not reported twice.

mod sections;
mod servers;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toolgate_policy::check::{field, member, Checker};
use toolgate_policy::document::{push_key, Member, Node, Pos, Value};
use toolgate_policy::{parse_policy, Diagnostic, Diagnostics, Format};

use crate::config::{
    AdminConfig, Config, GrantConfig, HttpConfig, LoadedPolicy, OtlpConfig, OtlpProtocol, Secret,
    ServerConfig, ServerTransport, StateConfig, StateStore, TelemetryConfig, UpstreamProtocol,
    WebhookConfig,
};
use crate::values::{self, quote};
use crate::{read, ConfigFormat};

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_SEPARATOR: &str = "__";
pub(crate) const DEFAULT_SESSION_KEY_ENV: &str = "TOOLGATE_SESSION_KEY";
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub(crate) const DEFAULT_WEBHOOK_SECRET_ENV: &str = "TOOLGATE_WEBHOOK_SECRET";
const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 5;
const MAX_WEBHOOK_ATTEMPTS: u64 = 20;
const DEFAULT_WEBHOOK_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_RESTART_INITIAL: Duration = Duration::from_millis(200);
const DEFAULT_RESTART_MAX: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
const DEFAULT_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const TOP_FIELDS: &[&str] = &[
    "listen",
    "policy",
    "separator",
    "servers",
    "grants",
    "sessions",
    "http",
    "state",
    "admin",
    "telemetry",
];
const SERVER_FIELDS: &[&str] = &[
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "transport",
    "protocol",
    "headers",
    "prefix",
    "per_session",
    "policy",
    "request_timeout",
    "restart",
];
const RESTART_FIELDS: &[&str] = &["initial", "max"];
const GRANT_FIELDS: &[&str] = &["token_sha256", "policy", "servers"];
const SESSION_FIELDS: &[&str] = &["key_env", "max_age"];
const STATE_FIELDS: &[&str] = &["store", "data_dir", "prefix", "fail"];
const ADMIN_FIELDS: &[&str] = &["listen", "token_sha256", "webhook"];
const WEBHOOK_FIELDS: &[&str] = &[
    "url",
    "secret_env",
    "max_attempts",
    "initial_backoff",
    "admin_url",
];
const TELEMETRY_FIELDS: &[&str] = &["service_name", "otlp"];
const OTLP_FIELDS: &[&str] = &["endpoint", "protocol", "headers"];
const HTTP_FIELDS: &[&str] = &[
    "allowed_origins",
    "allowed_hosts",
    "max_message_bytes",
    "request_timeout",
    "shutdown_grace",
];

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;
type Files<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// Reads and validates a config; `files` reads the policy files it names.
pub(crate) fn parse(
    source: &str,
    format: ConfigFormat,
    file: &str,
    base_dir: &Path,
    env: Env<'_>,
    files: Files<'_>,
) -> Result<Config, Diagnostics> {
    let read = read::read(source, format);
    let mut v = Validator {
        file,
        base_dir,
        env,
        files,
        found: Vec::new(),
        policies: HashMap::new(),
    };
    for problem in read.errors {
        v.problem(problem.pos, &problem.path, problem.message);
    }
    let config = read.root.as_ref().and_then(|root| v.config(root));
    match config {
        Some(config) if v.found.is_empty() => Ok(config),
        _ => {
            // Stable: a policy file's own diagnostics stay in their order,
            // right after the config line that names the file.
            v.found.sort_by_key(|(pos, _)| *pos);
            Err(Diagnostics(v.found.into_iter().map(|(_, d)| d).collect()))
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    base_dir: &'a Path,
    env: Env<'a>,
    files: Files<'a>,
    /// Every problem, with the config position it sorts by.
    found: Vec<(Pos, Diagnostic)>,
    /// Policy files already read (each is read and reported once).
    policies: HashMap<PathBuf, Option<LoadedPolicy>>,
}

/// What a server declared, for the cross-field rules.
struct ServerSeen {
    name: String,
    key_pos: Pos,
    /// The effective prefix and where it comes from.
    prefix: Option<(String, Pos)>,
    has_policy: bool,
}

/// What a grant declared, for the cross-field rules.
struct GrantSeen {
    has_policy: bool,
    /// `None`: every server.
    servers: Option<Vec<String>>,
}

impl Checker for Validator<'_> {
    fn problem(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.found.push((
            pos,
            Diagnostic {
                file: self.file.to_string(),
                line: pos.line,
                column: pos.column,
                path: path.to_string(),
                message: message.into(),
            },
        ));
    }
}

impl Validator<'_> {
    fn non_empty_string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        let s = self.string(node, path)?;
        if s.is_empty() {
            self.problem(node.pos, path, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<(String, Pos, String)>> {
        self.array(node, path, "an array of strings", |v, item, item_path| {
            v.string(item, item_path)
                .map(|s| (s.to_string(), item.pos, item_path.to_string()))
        })
    }

    /// The environment variable named by the field `name` (or `default` and
    /// its position when the field is absent), with the position problems
    /// about the variable are reported at.
    fn env_name<'n>(
        &mut self,
        members: &'n [Member],
        name: &str,
        path: &str,
        default: (&'static str, Pos),
    ) -> (Option<&'n str>, Pos) {
        let Some(n) = field(members, name) else {
            return (Some(default.0), default.1);
        };
        let var = self.string(n, path).and_then(|s| {
            if values::is_env_name(s) {
                Some(s)
            } else {
                self.problem(
                    n.pos,
                    path,
                    format!(
                        "invalid environment variable name {} (expected letters, digits and _, not starting with a digit)",
                        quote(s)
                    ),
                );
                None
            }
        });
        (var, n.pos)
    }

    fn duration(&mut self, node: &Node, path: &str, zero_ok: bool) -> Option<Duration> {
        let parsed = match &node.value {
            Value::String(s) => values::duration_text(s),
            Value::Number(n) => values::duration_seconds(n.as_f64().unwrap_or(f64::NAN)),
            _ => {
                self.wrong_type(
                    node,
                    path,
                    &format!("a duration ({})", values::DURATION_EXPECTED),
                );
                return None;
            }
        };
        match parsed {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.problem(node.pos, path, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                self.problem(node.pos, path, message);
                None
            }
        }
    }

    /// A `${VAR}`-interpolated string.
    fn interpolated(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        match values::interpolate(text, self.env) {
            Ok(value) => Some(value),
            Err(messages) => {
                for message in messages {
                    self.problem(node.pos, path, message);
                }
                None
            }
        }
    }

    /// Reads and validates a policy file named at `node`; every policy file
    /// is read once, its own diagnostics (with its own file name) placed
    /// right after the first line that names it.
    fn policy(&mut self, node: &Node, path: &str) -> Option<LoadedPolicy> {
        let relative = self.non_empty_string(node, path)?;
        let resolved = self.base_dir.join(relative);
        if let Some(loaded) = self.policies.get(&resolved) {
            return loaded.clone();
        }
        let loaded = self.read_policy(node, path, &resolved);
        self.policies.insert(resolved, loaded.clone());
        loaded
    }

    fn read_policy(&mut self, node: &Node, path: &str, resolved: &Path) -> Option<LoadedPolicy> {
        let shown = resolved.display().to_string();
        let Some(format) = Format::from_path(resolved) else {
            self.problem(
                node.pos,
                path,
                format!(
                    "policy file {} has an unknown format (use .json, .yaml or .yml)",
                    quote(&shown)
                ),
            );
            return None;
        };
        let text = match (self.files)(resolved) {
            Ok(text) => text,
            Err(e) => {
                self.problem(
                    node.pos,
                    path,
                    format!("cannot read policy file {}: {e}", quote(&shown)),
                );
                return None;
            }
        };
        match parse_policy(&text, format, &shown) {
            Ok(policy) => Some(LoadedPolicy {
                path: resolved.to_path_buf(),
                policy: Arc::new(policy),
            }),
            Err(diagnostics) => {
                self.problem(
                    node.pos,
                    path,
                    format!("policy file {} is not valid:", quote(&shown)),
                );
                self.found
                    .extend(diagnostics.0.into_iter().map(|d| (node.pos, d)));
                None
            }
        }
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let members = self.object(root, "", TOP_FIELDS)?;

        let listen_node = field(members, "listen");
        let listen = match listen_node {
            None => Some(DEFAULT_LISTEN.parse().expect("the default listen address")),
            Some(node) => self.listen(node, "listen"),
        };

        let policy_node = field(members, "policy");
        let policy = policy_node.and_then(|node| self.policy(node, "policy"));

        let separator = match field(members, "separator") {
            None => Some(DEFAULT_SEPARATOR.to_string()),
            Some(node) => {
                self.string(node, "separator")
                    .and_then(|s| match values::check_separator(s) {
                        Ok(()) => Some(s.to_string()),
                        Err(message) => {
                            self.problem(node.pos, "separator", message);
                            None
                        }
                    })
            }
        };

        let mut seen_servers = Vec::new();
        let servers = match field(members, "servers") {
            None => {
                // At the document (a YAML mapping's own position is the end of its first key).
                self.problem(Pos::START, "", "missing field \"servers\"");
                None
            }
            Some(node) => self.servers(node, &mut seen_servers),
        };
        let server_names: Vec<&str> = seen_servers.iter().map(|s| s.name.as_str()).collect();
        let known_servers: HashSet<&str> = server_names.iter().copied().collect();

        let mut seen_grants = Vec::new();
        let grants = match field(members, "grants") {
            None => Some(Vec::new()),
            Some(node) => self.grants(node, (&server_names, &known_servers), &mut seen_grants),
        };

        let (session_key, session_max_age) = match field(members, "sessions") {
            None => self.sessions(None, root.pos),
            Some(node) => self.sessions(Some(node), node.pos),
        };

        let http = match field(members, "http") {
            None => Some(HttpConfig {
                allowed_origins: Vec::new(),
                allowed_hosts: Vec::new(),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            }),
            Some(node) => self.http(node),
        };

        let state = match field(members, "state") {
            None => Some(StateConfig::default()),
            Some(node) => self.state(node),
        };

        let admin = match member(members, "admin") {
            None => Some(None),
            Some(m) => self
                .admin(m, listen, grants.as_deref().unwrap_or_default())
                .map(Some),
        };

        let telemetry = match field(members, "telemetry") {
            None => Some(TelemetryConfig::default()),
            Some(node) => self.telemetry(node),
        };

        // Every server must be covered by some policy (fail closed).
        let has_top_policy = policy_node.is_some();
        // A server is covered by the grants when every grant that reaches it
        // has a policy: sets, not a search of every grant per server.
        let every_server_uncovered = seen_grants
            .iter()
            .any(|g| g.servers.is_none() && !g.has_policy);
        let uncovered: HashSet<&str> = seen_grants
            .iter()
            .filter(|g| !g.has_policy)
            .filter_map(|g| g.servers.as_ref())
            .flatten()
            .map(String::as_str)
            .collect();
        for server in &seen_servers {
            if has_top_policy || server.has_policy {
                continue;
            }
            let grants_cover = !seen_grants.is_empty()
                && !every_server_uncovered
                && !uncovered.contains(server.name.as_str());
            if !grants_cover {
                self.problem(
                    server.key_pos,
                    &push_key("servers", &server.name),
                    format!(
                        "server {} has no policy: set a top-level \"policy\", a \"policy\" for this server, \
                         or a \"policy\" on every grant that reaches it (a gateway without a policy would \
                         allow every call; fail closed)",
                        quote(&server.name)
                    ),
                );
            }
        }

        // An open listen address needs grants.
        if let (Some(addr), Some(node)) = (listen, listen_node) {
            if !addr.ip().is_loopback() && seen_grants.is_empty() {
                self.problem(
                    node.pos,
                    "listen",
                    format!(
                        "a non-loopback listen address needs grants ({addr} is reachable from other \
                         machines; add \"grants\" so every client must present a token, or listen on 127.0.0.1)"
                    ),
                );
            }
        }

        Some(Config {
            listen: listen?,
            policy,
            separator: separator?,
            servers: servers?,
            grants: grants?,
            session_key: session_key?,
            session_max_age: session_max_age?,
            http: http?,
            state: state?,
            admin: admin?,
            telemetry: telemetry?,
        })
    }

    /// `server_names`: the configured servers, in order (for messages) and
    /// as a set (for lookups).
    fn grants(
        &mut self,
        node: &Node,
        server_names: (&[&str], &HashSet<&str>),
        seen: &mut Vec<GrantSeen>,
    ) -> Option<Vec<GrantConfig>> {
        let members = self.members(node, "grants")?;
        let mut grants = Vec::new();
        let mut ok = true;
        // Token hash → the grant that first used it.
        let mut hashes: HashMap<[u8; 32], String> = HashMap::new();
        for m in members {
            let path = push_key("grants", &m.key);
            let before = self.found.len();
            if let Err(message) = values::check_name(&m.key) {
                self.problem(
                    m.key_pos,
                    "grants",
                    format!("invalid grant name: {message}"),
                );
            }
            let Some(fields) = self.object(&m.value, &path, GRANT_FIELDS) else {
                seen.push(GrantSeen {
                    has_policy: true,
                    servers: None,
                });
                ok = false;
                continue;
            };
            let at = |name: &str| push_key(&path, name);
            let token = match field(fields, "token_sha256") {
                None => {
                    self.problem(m.key_pos, &path, "missing field \"token_sha256\"");
                    None
                }
                Some(n) => self.token_hash(n, &at("token_sha256")),
            };
            if let (Some(hash), Some(n)) = (token, field(fields, "token_sha256")) {
                if let Some(first) = hashes.get(&hash) {
                    self.problem(
                        n.pos,
                        &at("token_sha256"),
                        format!(
                            "grant {} has the same token_sha256 as grant {} (each grant needs its own token)",
                            quote(&m.key),
                            quote(first)
                        ),
                    );
                } else {
                    hashes.insert(hash, m.key.clone());
                }
            }
            let policy_node = field(fields, "policy");
            let policy = policy_node.and_then(|n| self.policy(n, &at("policy")));
            let servers = match field(fields, "servers") {
                None => Some(None),
                Some(n) => self
                    .grant_servers(n, &at("servers"), server_names)
                    .map(Some),
            };
            seen.push(GrantSeen {
                has_policy: policy_node.is_some(),
                servers: servers.clone().flatten(),
            });
            if self.found.len() > before {
                ok = false;
                continue;
            }
            match (token, servers) {
                (Some(token_sha256), Some(servers)) => grants.push(GrantConfig {
                    name: m.key.clone(),
                    token_sha256,
                    policy,
                    servers,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(grants)
    }

    fn token_hash(&mut self, node: &Node, path: &str) -> Option<[u8; 32]> {
        let text = self.string(node, path)?;
        let mut hash = [0u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text, &mut hash).is_ok() {
            return Some(hash);
        }
        self.problem(
            node.pos,
            path,
            format!(
                "token_sha256 must be 64 hex characters (the SHA-256 of the token, see `toolgate grant new`), found {} characters",
                text.chars().count()
            ),
        );
        None
    }

    fn grant_servers(
        &mut self,
        node: &Node,
        path: &str,
        (server_names, known): (&[&str], &HashSet<&str>),
    ) -> Option<Vec<String>> {
        let items = self.strings(node, path)?;
        if items.is_empty() {
            self.problem(
                node.pos,
                path,
                "servers must name at least one server (leave it out to allow every server)",
            );
            return None;
        }
        let mut ok = true;
        let mut names = Vec::new();
        let mut listed = HashSet::new();
        for (name, pos, item_path) in items {
            if !known.contains(name.as_str()) {
                self.problem(
                    pos,
                    &item_path,
                    format!(
                        "unknown server {} (configured: {})",
                        quote(&name),
                        server_names.join(", ")
                    ),
                );
                ok = false;
            } else if !listed.insert(name.clone()) {
                self.problem(
                    pos,
                    &item_path,
                    format!("server {} is listed twice", quote(&name)),
                );
                ok = false;
            }
            names.push(name);
        }
        ok.then_some(names)
    }

    fn sessions(
        &mut self,
        node: Option<&Node>,
        pos: Pos,
    ) -> (Option<Option<[u8; 32]>>, Option<Duration>) {
        let members = match node {
            None => Some(&[][..]),
            Some(node) => self.object(node, "sessions", SESSION_FIELDS),
        };
        let Some(members) = members else {
            return (None, None);
        };
        let (var, var_pos) = self.env_name(
            members,
            "key_env",
            "sessions.key_env",
            (DEFAULT_SESSION_KEY_ENV, pos),
        );
        let key = var.and_then(|var| match (self.env)(var) {
            None => Some(None),
            Some(value) => {
                let mut key = [0u8; 32];
                let value = value.trim();
                if value.len() == 64 && hex::decode_to_slice(value, &mut key).is_ok() {
                    Some(Some(key))
                } else {
                    // Never echo the value.
                    self.problem(
                        var_pos,
                        "sessions.key_env",
                        format!(
                            "environment variable {var} must hold the session key as 64 hex characters (32 bytes), found {} characters",
                            value.chars().count()
                        ),
                    );
                    None
                }
            }
        });
        let idle = match field(members, "max_age") {
            None => Some(DEFAULT_IDLE_TIMEOUT),
            Some(n) => self.duration(n, "sessions.max_age", false),
        };
        (key, idle)
    }

    fn http(&mut self, node: &Node) -> Option<HttpConfig> {
        let members = self.object(node, "http", HTTP_FIELDS)?;
        let origins = match field(members, "allowed_origins") {
            None => Some(Vec::new()),
            Some(n) => self.normalized_list(n, "http.allowed_origins", values::origin),
        };
        let hosts = match field(members, "allowed_hosts") {
            None => Some(Vec::new()),
            Some(n) => self.normalized_list(n, "http.allowed_hosts", values::host),
        };
        let max_message_bytes = match field(members, "max_message_bytes") {
            None => Some(DEFAULT_MAX_MESSAGE_BYTES),
            Some(n) => self.byte_size(n, "http.max_message_bytes"),
        };
        let request_timeout = match field(members, "request_timeout") {
            None => Some(DEFAULT_HTTP_REQUEST_TIMEOUT),
            Some(n) => self.duration(n, "http.request_timeout", false),
        };
        let shutdown_grace = match field(members, "shutdown_grace") {
            None => Some(DEFAULT_SHUTDOWN_GRACE),
            Some(n) => self.duration(n, "http.shutdown_grace", true),
        };
        Some(HttpConfig {
            allowed_origins: origins?,
            allowed_hosts: hosts?,
            max_message_bytes: max_message_bytes?,
            request_timeout: request_timeout?,
            shutdown_grace: shutdown_grace?,
        })
    }

    fn normalized_list(
        &mut self,
        node: &Node,
        path: &str,
        normalize: fn(&str) -> Result<String, String>,
    ) -> Option<Vec<String>> {
        let items = self.strings(node, path)?;
        let mut ok = true;
        let mut out = Vec::new();
        for (text, pos, item_path) in items {
            match normalize(&text) {
                Ok(value) => out.push(value),
                Err(message) => {
                    self.problem(pos, &item_path, message);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn byte_size(&mut self, node: &Node, path: &str) -> Option<usize> {
        let parsed = match &node.value {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| format!("expected a whole number of bytes, found {n}")),
            Value::String(s) => values::byte_size_text(s),
            _ => {
                self.wrong_type(node, path, &format!("a size ({})", values::SIZE_EXPECTED));
                return None;
            }
        };
        match parsed {
            Ok(n) if (1..=values::MAX_MESSAGE_BYTES).contains(&n) => usize::try_from(n).ok(),
            Ok(n) => {
                self.problem(
                    node.pos,
                    path,
                    format!("must be from 1 byte to 1 GiB, found {n} bytes"),
                );
                None
            }
            Err(message) => {
                self.problem(node.pos, path, message);
                None
            }
        }
    }
}

#[derive(Clone, Copy)]
enum MapKind {
    Env,
    Headers,
}
