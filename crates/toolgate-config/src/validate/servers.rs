//! The `servers` section: each server, its transport, restart policy and
//! secrets.

use super::*;

impl Validator<'_> {
    pub(super) fn servers(
        &mut self,
        node: &Node,
        seen: &mut Vec<ServerSeen>,
    ) -> Option<Vec<ServerConfig>> {
        let members = self.members(node, "servers")?;
        if members.is_empty() {
            self.problem(node.pos, "servers", "at least one server is required");
            return None;
        }
        let mut servers = Vec::new();
        let mut ok = true;
        // Effective prefix → the server that first used it.
        let mut prefixes: HashMap<String, String> = HashMap::new();
        for m in members {
            let path = push_key("servers", &m.key);
            if let Err(message) = values::check_name(&m.key) {
                self.problem(
                    m.key_pos,
                    "servers",
                    format!("invalid server name: {message}"),
                );
                ok = false;
            }
            let (server, server_seen) = self.server(m, &path);
            if let Some((prefix, pos)) = &server_seen.prefix {
                if let Some(first) = prefixes.get(prefix) {
                    self.problem(
                        *pos,
                        &path,
                        format!(
                            "server {} has the same prefix {} as server {} (their tools' gateway names would collide)",
                            quote(&m.key),
                            quote(prefix),
                            quote(first)
                        ),
                    );
                    ok = false;
                } else {
                    prefixes.insert(prefix.clone(), m.key.clone());
                }
            }
            seen.push(server_seen);
            match server {
                Some(server) => servers.push(server),
                None => ok = false,
            }
        }
        ok.then_some(servers)
    }

    pub(super) fn server(&mut self, m: &Member, path: &str) -> (Option<ServerConfig>, ServerSeen) {
        let mut seen = ServerSeen {
            name: m.key.clone(),
            key_pos: m.key_pos,
            prefix: Some((m.key.clone(), m.key_pos)),
            has_policy: false,
        };
        let Some(members) = self.object(&m.value, path, SERVER_FIELDS) else {
            seen.prefix = None;
            return (None, seen);
        };
        let before = self.found.len();
        let at = |name: &str| push_key(path, name);

        let prefix = match field(members, "prefix") {
            None => Some(Some(m.key.clone())),
            Some(node) => match &node.value {
                Value::Bool(true) => Some(Some(m.key.clone())),
                Value::Bool(false) => Some(None),
                Value::String(s) => match values::check_name(s) {
                    Ok(()) => Some(Some(s.clone())),
                    Err(message) => {
                        self.problem(
                            node.pos,
                            &at("prefix"),
                            format!("invalid prefix: {message}"),
                        );
                        None
                    }
                },
                _ => {
                    self.wrong_type(node, &at("prefix"), "a boolean or a string");
                    None
                }
            },
        };
        let prefix_pos = field(members, "prefix").map_or(m.key_pos, |n| n.pos);
        seen.prefix = prefix.clone().flatten().map(|p| (p, prefix_pos));

        let per_session = match field(members, "per_session") {
            None => Some(false),
            Some(node) => self.bool(node, &at("per_session")),
        };
        let policy = match field(members, "policy") {
            None => None,
            Some(node) => {
                seen.has_policy = true;
                self.policy(node, &at("policy"))
            }
        };
        let request_timeout = match field(members, "request_timeout") {
            None => Some(DEFAULT_REQUEST_TIMEOUT),
            Some(node) => self.duration(node, &at("request_timeout"), false),
        };
        let (restart_initial, restart_max) = match field(members, "restart") {
            None => (Some(DEFAULT_RESTART_INITIAL), Some(DEFAULT_RESTART_MAX)),
            Some(node) => self.restart(node, &at("restart")),
        };
        let transport = self.transport(m.key_pos, members, path);

        let complete = self.found.len() == before;
        let server = match (
            complete,
            transport,
            prefix,
            per_session,
            request_timeout,
            restart_initial,
            restart_max,
        ) {
            (
                true,
                Some(transport),
                Some(prefix),
                Some(per_session),
                Some(request_timeout),
                Some(restart_initial),
                Some(restart_max),
            ) => Some(ServerConfig {
                name: m.key.clone(),
                transport,
                prefix,
                per_session,
                policy,
                request_timeout,
                restart_initial,
                restart_max,
            }),
            _ => None,
        };
        (server, seen)
    }

    pub(super) fn restart(
        &mut self,
        node: &Node,
        path: &str,
    ) -> (Option<Duration>, Option<Duration>) {
        let Some(members) = self.object(node, path, RESTART_FIELDS) else {
            return (None, None);
        };
        let initial = match field(members, "initial") {
            None => Some(DEFAULT_RESTART_INITIAL),
            Some(n) => self.duration(n, &push_key(path, "initial"), false),
        };
        let max = match field(members, "max") {
            None => Some(DEFAULT_RESTART_MAX),
            Some(n) => self.duration(n, &push_key(path, "max"), false),
        };
        if let (Some(i), Some(m)) = (initial, max) {
            if i > m {
                self.problem(
                    node.pos,
                    path,
                    format!("initial ({i:?}) must not be longer than max ({m:?})"),
                );
                return (None, None);
            }
        }
        (initial, max)
    }

    /// `key_pos`: where the server's name is, for "found neither".
    pub(super) fn transport(
        &mut self,
        key_pos: Pos,
        members: &[Member],
        path: &str,
    ) -> Option<ServerTransport> {
        let command = member(members, "command");
        let url = member(members, "url");
        let at = |name: &str| push_key(path, name);
        match (command, url) {
            (Some(_), Some(url)) => {
                self.problem(
                    url.key_pos,
                    path,
                    "a server has exactly one of \"command\" (stdio) or \"url\" (HTTP), found both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    key_pos,
                    path,
                    "a server needs \"command\" (stdio) or \"url\" (HTTP), found neither",
                );
                None
            }
            (Some(command), None) => {
                for name in ["transport", "protocol", "headers"] {
                    if let Some(m) = member(members, name) {
                        self.problem(
                            m.key_pos,
                            path,
                            format!(
                                "{} is only allowed with \"url\" (this server has \"command\")",
                                quote(name)
                            ),
                        );
                    }
                }
                let cmd = self.non_empty_string(&command.value, &at("command"));
                let args = match field(members, "args") {
                    None => Some(Vec::new()),
                    Some(n) => self
                        .strings(n, &at("args"))
                        .map(|items| items.into_iter().map(|(s, _, _)| s).collect()),
                };
                let env = match field(members, "env") {
                    None => Some(Vec::new()),
                    Some(n) => self.secret_map(n, &at("env"), MapKind::Env),
                };
                let cwd = match field(members, "cwd") {
                    None => Some(None),
                    Some(n) => self
                        .non_empty_string(n, &at("cwd"))
                        .map(|s| Some(self.base_dir.join(s))),
                };
                Some(ServerTransport::Stdio {
                    command: cmd?.to_string(),
                    args: args?,
                    env: env?,
                    cwd: cwd?,
                })
            }
            (None, Some(url)) => {
                for name in ["env", "args", "cwd"] {
                    if let Some(m) = member(members, name) {
                        self.problem(
                            m.key_pos,
                            path,
                            format!(
                                "{} is only allowed with \"command\" (this server has \"url\")",
                                quote(name)
                            ),
                        );
                    }
                }
                let url_text = self.string(&url.value, &at("url")).and_then(|s| {
                    match values::check_url(s, values::Schemes::HttpOrHttps) {
                        Ok(()) => Some(s.to_string()),
                        Err(message) => {
                            self.problem(url.value.pos, &at("url"), message);
                            None
                        }
                    }
                });
                let sse = match field(members, "transport") {
                    None => Some(false),
                    Some(n) => match self.string(n, &at("transport")) {
                        Some("streamable_http") => Some(false),
                        Some("sse") => Some(true),
                        Some(other) => {
                            self.problem(
                                n.pos,
                                &at("transport"),
                                format!(
                                    "unknown transport {} (expected streamable_http or sse)",
                                    quote(other)
                                ),
                            );
                            None
                        }
                        None => None,
                    },
                };
                let protocol = match field(members, "protocol") {
                    None => Some(UpstreamProtocol::Auto),
                    Some(n) => match self.string(n, &at("protocol")) {
                        Some("auto") => Some(UpstreamProtocol::Auto),
                        Some("2025-11-25") => Some(UpstreamProtocol::Handshake),
                        Some("2026-07-28") => Some(UpstreamProtocol::Stateless),
                        Some(other) => {
                            self.problem(
                                n.pos,
                                &at("protocol"),
                                format!(
                                    "unknown protocol {} (expected auto, 2025-11-25 or 2026-07-28)",
                                    quote(other)
                                ),
                            );
                            None
                        }
                        None => None,
                    },
                };
                if sse == Some(true) {
                    if let Some(m) = member(members, "protocol") {
                        self.problem(
                            m.key_pos,
                            path,
                            "\"protocol\" is only allowed with the streamable_http transport (this server has \"transport: sse\")",
                        );
                    }
                }
                let headers = match field(members, "headers") {
                    None => Some(Vec::new()),
                    Some(n) => self.secret_map(n, &at("headers"), MapKind::Headers),
                };
                let (url, headers, protocol) = (url_text?, headers?, protocol?);
                Some(if sse? {
                    ServerTransport::Sse { url, headers }
                } else {
                    ServerTransport::Http {
                        url,
                        headers,
                        protocol,
                    }
                })
            }
        }
    }

    /// `env` or `headers`: an object of strings, values `${VAR}`-interpolated.
    pub(super) fn secret_map(
        &mut self,
        node: &Node,
        path: &str,
        kind: MapKind,
    ) -> Option<Vec<(String, Secret)>> {
        let members = self.members(node, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for m in members {
            let item_path = push_key(path, &m.key);
            let name_problem = match kind {
                MapKind::Env if m.key.is_empty() || m.key.contains(['=', '\0']) => Some(format!(
                    "invalid environment variable name {} (it must be non-empty, without \"=\")",
                    quote(&m.key)
                )),
                MapKind::Headers if !values::is_header_name(&m.key) => {
                    Some(format!("invalid header name {}", quote(&m.key)))
                }
                _ => None,
            };
            if let Some(message) = name_problem {
                self.problem(m.key_pos, path, message);
                ok = false;
            }
            match self.interpolated(&m.value, &item_path) {
                Some(value) => {
                    let bad = match kind {
                        MapKind::Env => value.contains('\0'),
                        MapKind::Headers => value.contains(['\r', '\n', '\0']),
                    };
                    if bad {
                        // Never echo the value: it may hold a secret.
                        self.problem(
                            m.value.pos,
                            &item_path,
                            "the value (after ${VAR} substitution) contains a line break or NUL",
                        );
                        ok = false;
                    } else {
                        out.push((m.key.clone(), Secret::new(value)));
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
