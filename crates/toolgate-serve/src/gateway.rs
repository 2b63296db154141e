//! The gateway's state: one `Gateway` per process, shared by every
//! connection, made of parts that each own their state and lock (`Lists`,
//! `Grants`, `Sessions`, `Streams`, `Instances`, `Calls`, `Pins`,
//! `Approvals`); its options, start-up, reload and shutdown; and the types
//! a message is handled with (`Context`, `Reply`).
//!
//! The gateway is an MCP server to its clients and an MCP client to each
//! upstream server (`toolgate-upstream`); what it does with each message is
//! in `router`.

use crate::catalog::{Catalog, Naming};
use crate::replay::EventLog;
use crate::session::{Session, SessionKey};
use serde_json::{Map, Value};
// foldhash: keyed per process, several times faster than SipHash on the
// per-call maps (session tokens, request ids).
pub use crate::approvals::AuditApprovals;
pub use crate::grants::Caller;
pub use crate::sessions::SessionRefused;
use crate::upstreams::{AnyUpstream, Upstream};
use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_approvals::{ApprovalEvents, ApprovalStore};
use toolgate_audit::{AuditSink, LogLevel};
use toolgate_call::answer::Era;
use toolgate_clock::monotonic_now;
use toolgate_clock::Clock;
use toolgate_policy::{CounterStore, Policy};
use toolgate_upstream::{RpcError, UpstreamEvent, UpstreamSpec};

/// The protocol versions of the handshake era the gateway speaks to clients.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// What a client of the legacy HTTP+SSE transport (`/sse`) is answered: the
/// version it asks for when known, else that transport's own revision
/// (the first).
pub const LEGACY_VERSIONS: &[&str] = &["2024-11-05", "2025-11-25", "2025-06-18", "2025-03-26"];

use crate::approvals::Approvals;
use crate::catalog::Lists;
use crate::forward::Calls;
use crate::grants::Grants;
use crate::instances::Instance;
use crate::instances::Instances;
use crate::instances::INSTANCE_IDLE;
use crate::pins::Pins;
use crate::sessions::Sessions;
use crate::streams::Streams;
use crate::upstreams::Server;
/// The stateless protocol version, its envelope's `_meta` keys and its
/// "unsupported protocol version" code: the same the upstream side speaks.
pub use toolgate_upstream::{
    CLIENT_CAPABILITIES_KEY as META_CAPS, CLIENT_INFO_KEY as META_INFO,
    PROTOCOL_VERSION_KEY as META_VERSION, STATELESS_VERSION, UNSUPPORTED_PROTOCOL_VERSION,
};

/// JSON-RPC code of the 2026-07-28 HTTP transport for routing headers that
/// disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// One upstream server as the gateway is told about it.
pub struct ServerOptions {
    pub name: String,
    /// `None`: the server's own names are the gateway names.
    pub prefix: Option<String>,
    /// The server's own policy, over its own tool names.
    pub policy: Option<Arc<Policy>>,
    pub spec: UpstreamSpec,
    /// Run one instance of the server per client session (servers that keep
    /// per-client state); the shared instance only answers the lists.
    pub per_session: bool,
}

/// One agent credential.
#[derive(Clone)]
pub struct GrantOptions {
    pub name: String,
    pub token_sha256: [u8; 32],
    /// Used instead of the gateway policy when set.
    pub policy: Option<Arc<Policy>>,
    /// The servers this grant may reach (`None`: all).
    pub servers: Option<Vec<String>>,
}

/// Everything `Gateway::start` needs; the outside world comes in here.
pub struct GatewayOptions {
    pub servers: Vec<ServerOptions>,
    pub separator: String,
    pub policy: Option<Arc<Policy>>,
    pub grants: Vec<GrantOptions>,
    pub session_key: SessionKey,
    pub session_ttl: Duration,
    pub store: Arc<dyn CounterStore>,
    pub clock: Arc<dyn Clock>,
    pub audit: AuditSink,
    pub audit_args: bool,
    /// How long start-up waits for every server before serving without it.
    pub startup_timeout: Duration,
    /// Approval requests (require_approval rules).
    pub approvals: Arc<dyn ApprovalStore>,
    /// Told about new approval requests and decisions (webhook, audit).
    pub approval_events: Arc<dyn ApprovalEvents>,
    /// Pinned tool definitions.
    pub pins: Arc<dyn toolgate_pins::PinStore>,
    /// While the pin store cannot be reached: hold tools back (false) or not.
    pub pins_fail_open: bool,
    /// Sessions ended by `DELETE /mcp`, shared with every process using
    /// the same state (refused until they would have expired).
    pub revocations: Arc<dyn toolgate_revocations::RevocationStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Conflict(String),
}

pub struct Gateway {
    pub(crate) servers: Vec<Server>,
    pub(crate) lists: Lists,
    pub(crate) grants: Grants,
    pub(crate) sessions: Sessions,
    pub(crate) streams: Streams,
    pub(crate) instances: Instances,
    pub(crate) calls: Calls,
    pub(crate) pins: Pins,
    pub(crate) approvals: Approvals,
    pub(crate) store: Arc<dyn CounterStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) audit: AuditSink,
    pub(crate) audit_args: bool,
}

/// What to send back for one message.
pub enum Reply {
    /// A JSON-RPC answer.
    Json(Value),
    /// A JSON-RPC answer, serialised.
    Raw(bytes::Bytes),
    /// A notification or response was accepted (HTTP 202).
    Accepted,
    /// Messages (server requests, progress) and then the answer, as SSE,
    /// from a log that a broken connection can resume.
    Stream(Arc<EventLog>),
}

/// The era a request is in, and what the answer needs for it.
#[derive(Clone)]
pub struct Context {
    pub caller: Caller,
    pub session: Arc<Session>,
    pub era: Era,
    /// The client's W3C trace context (`traceparent`, `tracestate`): the
    /// HTTP headers, else the request's `params._meta`; unchecked.
    pub trace: Option<(String, Option<String>)>,
    /// The text of the call's `arguments` as the client sent them, when
    /// known: numbers in conditions are compared exactly by it.
    pub arguments_text: Option<Box<str>>,
}

impl Context {
    /// The trace context of a request: the `traceparent` header (with its
    /// `tracestate`), else `params._meta.traceparent` (MCP's convention).
    pub fn trace_of(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        params: &Value,
    ) -> Option<(String, Option<String>)> {
        if let Some(tp) = traceparent {
            return Some((tp.to_string(), tracestate.map(str::to_string)));
        }
        let meta = params.get("_meta")?;
        let tp = meta.get("traceparent")?.as_str()?;
        let ts = meta.get("tracestate").and_then(Value::as_str);
        Some((tp.to_string(), ts.map(str::to_string)))
    }
}

impl Gateway {
    /// Starts every upstream and waits (up to `startup_timeout`) for them to
    /// be ready; a name conflict among the servers that came up is an error.
    pub async fn start(opts: GatewayOptions) -> Result<Arc<Gateway>, StartError> {
        Gateway::start_with(opts, |spec, events| {
            AnyUpstream::Real(toolgate_upstream::Upstream::start(spec, events))
        })
        .await
    }

    /// [`Gateway::start`], each server reached through what `connect` makes
    /// of its spec (tests give fakes).
    pub(crate) async fn start_with(
        opts: GatewayOptions,
        connect: impl Fn(UpstreamSpec, mpsc::UnboundedSender<UpstreamEvent>) -> AnyUpstream,
    ) -> Result<Arc<Gateway>, StartError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut servers = Vec::new();
        let mut naming = Vec::new();
        for s in opts.servers {
            naming.push(Naming {
                server: s.name.clone(),
                prefix: s.prefix.clone(),
            });
            servers.push(Server {
                key_prefix: format!("{}\u{1e}", s.name),
                name: s.name,
                policy: RwLock::new(s.policy),
                per_session: s.per_session.then(|| s.spec.clone()),
                upstream: connect(s.spec, events_tx.clone()),
                twin: RwLock::new(None),
                probed: Default::default(),
            });
        }
        let count = servers.len();
        let gateway = Arc::new(Gateway {
            servers,
            lists: Lists {
                naming,
                separator: opts.separator,
                held: Mutex::new(vec![None; count]),
                merged: RwLock::new(Arc::new(Catalog::default())),
                twins: Mutex::new(vec![None; count]),
                stateless: RwLock::new(Arc::new(Catalog::default())),
            },
            grants: Grants {
                policy: RwLock::new(opts.policy),
                anonymous_allowed: opts.grants.is_empty(),
                list: RwLock::new(Arc::new(opts.grants.into_iter().map(Arc::new).collect())),
                anonymous: Arc::new(GrantOptions {
                    name: "anonymous".into(),
                    token_sha256: [0; 32],
                    policy: None,
                    servers: None,
                }),
            },
            sessions: Sessions {
                key: opts.session_key,
                ttl: opts.session_ttl,
                opened: Mutex::new(HashMap::new()),
                revocations: opts.revocations,
            },
            streams: Streams::default(),
            instances: Instances {
                map: tokio::sync::Mutex::new(HashMap::new()),
                runtime: tokio::runtime::Handle::current(),
            },
            calls: Calls::default(),
            pins: Pins {
                store: opts.pins,
                fail_open: opts.pins_fail_open,
                held_back: RwLock::new(std::collections::HashSet::new()),
            },
            approvals: Approvals {
                store: opts.approvals,
                events: opts.approval_events,
            },
            store: opts.store,
            clock: opts.clock,
            audit: opts.audit,
            audit_args: opts.audit_args,
        });
        // Every server is waited for, asked about 2026-07-28 and listed at
        // the same time: start-up takes as long as the slowest server, not
        // the sum of them.
        let deadline = monotonic_now() + opts.startup_timeout;
        let ready = gateway.servers.iter().enumerate().map(|(index, server)| {
            let gateway = &gateway;
            async move {
                let left = deadline.saturating_duration_since(monotonic_now());
                if server.upstream.wait_ready(left).await {
                    gateway.probe_twin(index).await;
                    gateway.refresh(index).await;
                } else {
                    gateway.audit.log(
                        LogLevel::Warn,
                        &format!(
                            "server {:?} is not ready; serving without it until it is",
                            server.name
                        ),
                    );
                }
            }
        });
        futures_util::future::join_all(ready).await;
        let conflicts = gateway.catalog().conflicts.clone();
        if !conflicts.is_empty() {
            return Err(StartError::Conflict(conflicts.join("\n")));
        }
        let g = gateway.clone();
        tokio::spawn(async move { g.watch(events_rx).await });
        if gateway.servers.iter().any(|s| s.per_session.is_some()) {
            let g = Arc::downgrade(&gateway);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let Some(g) = g.upgrade() else { return };
                    g.reap_instances(INSTANCE_IDLE).await;
                }
            });
        }
        Ok(gateway)
    }

    /// Puts new policies in force (hot reload): the gateway's, and each named
    /// server's own. Counters are untouched; clients are told the tool list
    /// may have changed.
    pub fn set_policies(
        &self,
        gateway: Option<Arc<Policy>>,
        servers: &[(String, Option<Arc<Policy>>)],
    ) {
        *self.grants.policy.write().expect("policy lock") = gateway;
        for (name, policy) in servers {
            if let Some(server) = self.servers.iter().find(|s| &s.name == name) {
                *server.policy.write().expect("policy lock") = policy.clone();
            }
        }
        self.broadcast_list_changed();
    }

    /// Stops every upstream.
    pub async fn shutdown(&self, grace: Duration) {
        let instances: Vec<Instance> = self
            .instances
            .map
            .lock()
            .await
            .drain()
            .map(|(_, i)| i)
            .collect();
        for instance in instances {
            instance.upstream.shutdown(grace).await;
        }
        for server in &self.servers {
            server.upstream.shutdown(grace).await;
            let twin = server.twin.write().expect("twin lock").take();
            if let Some(twin) = twin {
                twin.shutdown(grace).await;
            }
        }
        self.audit.flush();
    }
}

pub(crate) fn rpc(code: i64, message: &str) -> RpcError {
    RpcError {
        code,
        message: message.to_string(),
        data: None,
    }
}

/// The JSON object of a `_meta`, if any.
pub fn meta_of(params: &Value) -> Option<&Map<String, Value>> {
    params.get("_meta")?.as_object()
}
