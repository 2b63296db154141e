//! The config's sections besides servers and grants: telemetry, state,
//! admin (and its webhook), listen addresses.

use super::*;

impl Validator<'_> {
    /// The `telemetry` section: the spans' service name and the OTLP collector.
    pub(super) fn telemetry(&mut self, node: &Node) -> Option<TelemetryConfig> {
        let members = self.object(node, "telemetry", TELEMETRY_FIELDS)?;
        let service_name = match field(members, "service_name") {
            None => Some(None),
            Some(n) => self
                .non_empty_string(n, "telemetry.service_name")
                .map(|s| Some(s.to_string())),
        };
        let otlp = match member(members, "otlp") {
            None => Some(None),
            Some(m) => self.otlp(m).map(Some),
        };
        Some(TelemetryConfig {
            service_name: service_name?,
            otlp: otlp?,
        })
    }

    pub(super) fn otlp(&mut self, m: &Member) -> Option<OtlpConfig> {
        let path = "telemetry.otlp";
        let members = self.object(&m.value, path, OTLP_FIELDS)?;
        let at = |name: &str| push_key(path, name);
        let endpoint = self
            .required(
                m.key_pos,
                members,
                path,
                "endpoint",
                Some("the collector's base URL, such as http://127.0.0.1:4318"),
            )
            .and_then(|n| {
                self.string(n, &at("endpoint")).and_then(|s| {
                    match values::check_url(s, values::Schemes::HttpOrHttps) {
                        Ok(()) => Some(s.trim_end_matches('/').to_string()),
                        Err(message) => {
                            self.problem(n.pos, &at("endpoint"), message);
                            None
                        }
                    }
                })
            });
        let protocol = match field(members, "protocol") {
            None => Some(OtlpProtocol::HttpProtobuf),
            Some(n) => match self.string(n, &at("protocol"))? {
                "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
                "http/json" => Some(OtlpProtocol::HttpJson),
                other => {
                    let message = if other == "grpc" {
                        "OTLP over gRPC is not supported (expected http/protobuf or http/json)"
                            .to_string()
                    } else {
                        format!(
                            "unknown OTLP protocol {} (expected http/protobuf or http/json)",
                            quote(other)
                        )
                    };
                    self.problem(n.pos, &at("protocol"), message);
                    None
                }
            },
        };
        let headers = match field(members, "headers") {
            None => Some(Vec::new()),
            Some(n) => self.secret_map(n, &at("headers"), MapKind::Headers),
        };
        Some(OtlpConfig {
            endpoint: endpoint?,
            protocol: protocol?,
            headers: headers?,
        })
    }

    pub(super) fn state(&mut self, node: &Node) -> Option<StateConfig> {
        let members = self.object(node, "state", STATE_FIELDS)?;
        let mut ok = true;
        let store = match field(members, "store") {
            None => Some(StateStore::Embedded),
            Some(n) => {
                let text = self.string(n, "state.store")?;
                match text {
                    "embedded" => Some(StateStore::Embedded),
                    "memory" => Some(StateStore::Memory),
                    url if url.starts_with("redis://") && url.len() > "redis://".len() => {
                        Some(StateStore::Redis(url.to_string()))
                    }
                    other => {
                        self.problem(
                            n.pos,
                            "state.store",
                            format!(
                                "unknown store {} (expected embedded, memory or redis://HOST:PORT/DB)",
                                quote(other)
                            ),
                        );
                        None
                    }
                }
            }
        };
        let data_dir = match field(members, "data_dir") {
            None => None,
            Some(n) => match self.string(n, "state.data_dir") {
                Some(dir) => Some(self.base_dir.join(dir)),
                None => {
                    ok = false;
                    None
                }
            },
        };
        let prefix = match field(members, "prefix") {
            None => "toolgate".to_string(),
            Some(n) => match self.string(n, "state.prefix") {
                Some(p)
                    if !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)) =>
                {
                    p.to_string()
                }
                Some(p) => {
                    self.problem(
                        n.pos,
                        "state.prefix",
                        format!("prefix {} must be letters, digits, _ - . or :", quote(p)),
                    );
                    ok = false;
                    String::new()
                }
                None => {
                    ok = false;
                    String::new()
                }
            },
        };
        let fail = match field(members, "fail") {
            None => Some(toolgate_policy::FailMode::Closed),
            Some(n) => match self.string(n, "state.fail")? {
                "closed" => Some(toolgate_policy::FailMode::Closed),
                "open" => Some(toolgate_policy::FailMode::Open),
                other => {
                    self.problem(
                        n.pos,
                        "state.fail",
                        format!(
                            "unknown fail mode {} (expected closed or open)",
                            quote(other)
                        ),
                    );
                    None
                }
            },
        };
        let store = store?;
        let fail = fail?;
        ok.then_some(StateConfig {
            store,
            data_dir,
            prefix,
            fail,
        })
    }

    /// The `admin` section: the admin API's listener and token, and its webhook.
    pub(super) fn admin(
        &mut self,
        m: &Member,
        gateway_listen: Option<SocketAddr>,
        grants: &[GrantConfig],
    ) -> Option<AdminConfig> {
        let members = self.object(&m.value, "admin", ADMIN_FIELDS)?;
        let before = self.found.len();
        let listen = match field(members, "listen") {
            None => DEFAULT_ADMIN_LISTEN.parse().ok(),
            Some(n) => self.listen(n, "admin.listen"),
        };
        if let (Some(admin), Some(gateway), Some(n)) =
            (listen, gateway_listen, field(members, "listen"))
        {
            let same_ip = admin.ip() == gateway.ip()
                || admin.ip().is_unspecified()
                || gateway.ip().is_unspecified();
            if same_ip && admin.port() == gateway.port() && admin.port() != 0 {
                self.problem(
                    n.pos,
                    "admin.listen",
                    format!("admin.listen {admin} is the gateway's own listen address (the admin API needs a port of its own)"),
                );
            }
        }
        let token = match field(members, "token_sha256") {
            None => {
                // Always required, loopback or not: the admin API decides what agents may run.
                self.problem(
                    m.key_pos,
                    "admin",
                    "missing field \"token_sha256\" (the SHA-256 of the admin token; the admin API always needs a token)",
                );
                None
            }
            Some(n) => self.token_hash(n, "admin.token_sha256"),
        };
        if let (Some(hash), Some(n)) = (token, field(members, "token_sha256")) {
            if let Some(grant) = grants.iter().find(|g| g.token_sha256 == hash) {
                self.problem(
                    n.pos,
                    "admin.token_sha256",
                    format!(
                        "admin.token_sha256 is the token of grant {} (an agent's token must not open the admin API)",
                        quote(&grant.name)
                    ),
                );
            }
        }
        let webhook = match member(members, "webhook") {
            None => Some(None),
            Some(w) => self.webhook(w).map(Some),
        };
        if self.found.len() > before {
            return None;
        }
        Some(AdminConfig {
            listen: listen?,
            token_sha256: token?,
            webhook: webhook?,
        })
    }

    pub(super) fn webhook(&mut self, m: &Member) -> Option<WebhookConfig> {
        let path = "admin.webhook";
        let members = self.object(&m.value, path, WEBHOOK_FIELDS)?;
        let at = |name: &str| push_key(path, name);
        let url_checked = |v: &mut Self, n: &Node, path: &str| {
            v.string(n, path)
                .and_then(|s| match values::check_url(s, values::Schemes::Http) {
                    Ok(()) => Some(s.to_string()),
                    Err(message) => {
                        v.problem(n.pos, path, message);
                        None
                    }
                })
        };
        let url = self
            .required(m.key_pos, members, path, "url", None)
            .and_then(|n| url_checked(self, n, &at("url")));
        let (var, var_pos) = self.env_name(
            members,
            "secret_env",
            &at("secret_env"),
            (DEFAULT_WEBHOOK_SECRET_ENV, m.key_pos),
        );
        let secret = var.and_then(|var| match (self.env)(var) {
            Some(value) if !value.is_empty() => Some(Secret::new(value)),
            found => {
                let state = if found.is_some() { "is empty" } else { "is not set" };
                self.problem(
                    var_pos,
                    &at("secret_env"),
                    format!("environment variable {var} {state} (it holds the webhook secret that signs webhooks and callbacks)"),
                );
                None
            }
        });
        let max_attempts = match field(members, "max_attempts") {
            None => Some(DEFAULT_WEBHOOK_MAX_ATTEMPTS),
            Some(n) => match &n.value {
                Value::Number(num) => match num.as_u64() {
                    Some(k) if (1..=MAX_WEBHOOK_ATTEMPTS).contains(&k) => u32::try_from(k).ok(),
                    _ => {
                        self.problem(
                            n.pos,
                            &at("max_attempts"),
                            format!("must be a whole number from 1 to {MAX_WEBHOOK_ATTEMPTS}, found {num}"),
                        );
                        None
                    }
                },
                _ => {
                    self.wrong_type(n, &at("max_attempts"), "a whole number");
                    None
                }
            },
        };
        let initial_backoff = match field(members, "initial_backoff") {
            None => Some(DEFAULT_WEBHOOK_INITIAL_BACKOFF),
            Some(n) => self.duration(n, &at("initial_backoff"), false),
        };
        let admin_url = match field(members, "admin_url") {
            None => Some(None),
            Some(n) => url_checked(self, n, &at("admin_url"))
                .map(|u| Some(u.trim_end_matches('/').to_string())),
        };
        Some(WebhookConfig {
            url: url?,
            secret: secret?,
            max_attempts: max_attempts?,
            initial_backoff: initial_backoff?,
            admin_url: admin_url?,
        })
    }

    pub(super) fn listen(&mut self, node: &Node, path: &str) -> Option<SocketAddr> {
        let text = self.string(node, path)?;
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    node.pos,
                    path,
                    format!(
                        "invalid listen address {} (expected an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\")",
                        quote(text)
                    ),
                );
                None
            }
        }
    }
}
