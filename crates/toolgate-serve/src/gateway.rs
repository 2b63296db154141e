//! The gateway's state and what it does with each MCP message: one
//! `Gateway` per process, shared by every connection.
//!
//! The gateway is an MCP server to its clients and an MCP client to each
//! upstream server (`toolgate-upstream`). Requests that name a tool, prompt
//! or resource are routed to the server that owns it; `tools/call` is
//! decided first, against every policy that applies (the grant's or the
//! gateway's, over gateway names, and the server's own, over its names).

use crate::catalog::{Catalog, Naming, ServerLists};
use crate::replay::{EventLog, KEEP};
use crate::rounds::{Relayed, UPSTREAM_STATE};
use crate::session::{random_id, Session, SessionKey};
use serde_json::{json, Map, Value};
// foldhash: keyed per process, several times faster than SipHash on the
// per-call maps (session tokens, request ids).
use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use toolgate_approvals::{
    call_key, decide_by_client_user, ApprovalEvents, ApprovalRequest, ApprovalStore, NewRequest,
    Status,
};
use toolgate_gateway::answer::{
    approval_denied_text, approval_input_required, approval_pending_text, approval_question,
    refusal, unknown_tool, Era, APPROVAL_INPUT, APPROVAL_STATE,
};
use toolgate_gateway::audit::{decision_facts, AuditSink, CallTrace, LogLevel, Outcome, Record};
use toolgate_gateway::Clock;
use toolgate_jsonrpc::{
    args_sha256, error_response, result_response, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND,
};
use toolgate_policy::{plan_layers, Call, CounterStore, Decision, Grant, Layer, Planned, Policy};
use toolgate_upstream::{
    Answer, BoxFuture, CallError, Downstream, RpcError, Upstream, UpstreamEvent, UpstreamSpec,
};

/// The protocol versions of the handshake era the gateway speaks to clients.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// What a client of the legacy HTTP+SSE transport (`/sse`) is answered: the
/// version it asks for when known, else that transport's own revision
/// (the first).
pub const LEGACY_VERSIONS: &[&str] = &["2024-11-05", "2025-11-25", "2025-06-18", "2025-03-26"];
/// The stateless protocol version, its envelope's `_meta` keys and its
/// "unsupported protocol version" code: the same the upstream side speaks.
pub use toolgate_upstream::{
    CLIENT_CAPABILITIES_KEY as META_CAPS, CLIENT_INFO_KEY as META_INFO,
    PROTOCOL_VERSION_KEY as META_VERSION, STATELESS_VERSION, UNSUPPORTED_PROTOCOL_VERSION,
};
/// JSON-RPC code of the 2026-07-28 HTTP transport for routing headers that
/// disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// How many opened session tokens are remembered (about 300 bytes each).
const OPENED_CAPACITY: usize = 16 * 1024;

/// How long a per-session instance may sit unused before it is stopped.
const INSTANCE_IDLE: Duration = Duration::from_secs(15 * 60);

/// A session's open GET streams, and the servers its grant may reach
/// (`None`: all), so that a server's notifications reach no one else.
#[derive(Default)]
struct Streams {
    servers: Option<Vec<String>>,
    senders: Vec<mpsc::UnboundedSender<Value>>,
}

/// Where a client's answer to a server-to-client request goes.
type ClientAnswer = oneshot::Sender<Result<Value, RpcError>>;
/// Runs when a forwarded request has its answer (audit, quota).
type OnDone = Box<dyn FnOnce(&Result<Answer, CallError>) + Send>;
/// Runs before a request is forwarded, with the client's side of it.
type Gate = Box<dyn FnOnce(Arc<ClientLink>) -> BoxFuture<GateOutcome> + Send>;

/// A forwarded request on its way: the upstream call (with its gate and
/// what to do when it is answered), abortable.
type CallTask = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Result<Answer, CallError>, futures_util::future::Aborted>,
            > + Send,
    >,
>;

/// `requestState` of a call parked while a 2026-07-28 client answers its
/// server's requests: this prefix and the parked call's key.
pub const CALL_STATE: &str = "toolgate-call:";

/// How long a parked call waits for the client's retry.
const PARK_TTL: Duration = Duration::from_secs(300);

/// A forwarded request whose server asked the client something: it waits
/// here, still running, for the client's retry with the answers.
struct Parked {
    grant: String,
    session: String,
    method: String,
    server: usize,
    task: CallTask,
    rx: OutboxRx,
    guard: AbortOnDrop,
    /// The ids of the server's requests that wait for the client's answers.
    pending: Vec<String>,
}

impl Parked {
    fn new(
        ctx: &Context,
        method: &str,
        server: usize,
        task: CallTask,
        rx: OutboxRx,
        guard: AbortOnDrop,
    ) -> Parked {
        Parked {
            grant: ctx.caller.grant.name.clone(),
            session: ctx.session.id.clone(),
            method: method.to_string(),
            server,
            task,
            rx,
            guard,
            pending: Vec::new(),
        }
    }
}

/// A JSON-RPC request (not a notification, not a response).
fn is_request(message: &Value) -> bool {
    message.get("method").is_some() && message.get("id").is_some()
}

enum GateOutcome {
    /// Forward the request; run this when it is answered.
    Proceed(Option<OnDone>),
    /// Answer with this result instead.
    Answer(Value),
}

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

struct Server {
    name: String,
    /// The server's own policy (swapped on reload).
    policy: RwLock<Option<Arc<Policy>>>,
    /// `server name` + U+001E: keeps this server's counters apart.
    key_prefix: String,
    upstream: Upstream,
    /// `Some` for per-session servers: how to start another instance.
    per_session: Option<UpstreamSpec>,
}

/// A per-session instance of a server.
struct Instance {
    upstream: Upstream,
    last_used: Instant,
}

/// Who is calling: a grant, resolved from the bearer token.
#[derive(Clone)]
pub struct Caller {
    pub grant: Arc<GrantOptions>,
}

pub struct Gateway {
    servers: Vec<Server>,
    naming: Vec<Naming>,
    separator: String,
    lists: Mutex<Vec<Option<ServerLists>>>,
    catalog: RwLock<Arc<Catalog>>,
    /// The gateway's policy over gateway names (swapped on reload).
    policy: RwLock<Option<Arc<Policy>>>,
    grants: RwLock<Arc<Vec<Arc<GrantOptions>>>>,
    pub(crate) key: SessionKey,
    session_ttl: Duration,
    store: Arc<dyn CounterStore>,
    clock: Arc<dyn Clock>,
    pub(crate) audit: AuditSink,
    audit_args: bool,
    next_id: AtomicU64,
    /// Open GET streams, by session id.
    streams: Mutex<HashMap<String, Streams>>,
    /// Server-to-client requests waiting for the client's answer, by (session, id).
    waiting: Mutex<HashMap<(String, String), ClientAnswer>>,
    /// Client requests in flight, by (session, id), so that
    /// `notifications/cancelled` can stop them.
    in_flight: Mutex<HashMap<(String, String), futures_util::future::AbortHandle>>,
    /// Sealed `requestState`s of stateless servers already taken.
    spent: crate::rounds::Spent,
    /// The runtime the gateway was made on: per-session server instances
    /// run there, not on the serving thread of the request that started
    /// them, so they live (and are shut down) with the gateway.
    runtime: tokio::runtime::Handle,
    /// Calls of 2026-07-28 clients parked until the client answers their
    /// servers' requests, by the key in their `requestState`.
    parked: Mutex<HashMap<String, Parked>>,
    /// Resource subscriptions: uri → sessions.
    subscriptions: Mutex<HashMap<String, Vec<String>>>,
    anonymous: Arc<GrantOptions>,
    /// Started with no grants: every caller is the anonymous grant.
    anonymous_allowed: bool,
    /// Streamed answers that can be resumed, by stream id.
    logs: Mutex<HashMap<String, Arc<EventLog>>>,
    /// Session tokens already opened (see `open_token`).
    opened: Mutex<HashMap<String, Arc<Session>>>,
    approvals: Arc<dyn ApprovalStore>,
    approval_events: Arc<dyn ApprovalEvents>,
    pins: Arc<dyn toolgate_pins::PinStore>,
    pins_fail_open: bool,
    revocations: Arc<dyn toolgate_revocations::RevocationStore>,
    /// Tools held back because their definition changed since it was pinned:
    /// (server index, the server's own tool name).
    held_back: RwLock<std::collections::HashSet<(usize, String)>>,
    /// Per-session instances, by (server index, session id).
    instances: tokio::sync::Mutex<HashMap<(usize, String), Instance>>,
}

/// Why a request's session is not continued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRefused {
    /// Unknown, forged, expired, another grant's, or ended (404).
    NotFound,
    /// The revocation store could not say whether it was ended (503).
    Unavailable(String),
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
                upstream: Upstream::start(s.spec, events_tx.clone()),
            });
        }
        let count = servers.len();
        let gateway = Arc::new(Gateway {
            servers,
            naming,
            separator: opts.separator,
            lists: Mutex::new(vec![None; count]),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            policy: RwLock::new(opts.policy),
            anonymous_allowed: opts.grants.is_empty(),
            grants: RwLock::new(Arc::new(opts.grants.into_iter().map(Arc::new).collect())),
            key: opts.session_key,
            session_ttl: opts.session_ttl,
            store: opts.store,
            clock: opts.clock,
            audit: opts.audit,
            audit_args: opts.audit_args,
            next_id: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            spent: Default::default(),
            runtime: tokio::runtime::Handle::current(),
            parked: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            instances: tokio::sync::Mutex::new(HashMap::new()),
            approvals: opts.approvals,
            approval_events: opts.approval_events,
            pins: opts.pins,
            pins_fail_open: opts.pins_fail_open,
            revocations: opts.revocations,
            held_back: RwLock::new(std::collections::HashSet::new()),
            opened: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            anonymous: Arc::new(GrantOptions {
                name: "anonymous".into(),
                token_sha256: [0; 32],
                policy: None,
                servers: None,
            }),
        });
        let deadline = Instant::now() + opts.startup_timeout;
        for (index, server) in gateway.servers.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if server.upstream.wait_ready(left).await {
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

    /// Each server, and whether it is connected now (for `toolgate_upstream_up`).
    pub fn upstreams_up(&self) -> Vec<(String, bool)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.upstream.info().is_some()))
            .collect()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Each server's name and whether it is connected now, in config order
    /// (the index of a catalogue entry's `server`).
    pub fn server_status(&self) -> Vec<(String, bool)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.upstream.info().is_some()))
            .collect()
    }

    pub fn has_grants(&self) -> bool {
        !self.grants.read().expect("grants lock").is_empty()
    }

    /// Replaces the grants (rotation, revocation); sessions of a grant that is
    /// gone stop working at their next request.
    pub fn set_grants(&self, grants: Vec<GrantOptions>) {
        *self.grants.write().expect("grants lock") =
            Arc::new(grants.into_iter().map(Arc::new).collect());
    }

    /// The caller a bearer token stands for. With no grants configured every
    /// caller is the anonymous grant. Every grant's hash is compared, in
    /// constant time, whatever matches.
    pub fn authenticate(&self, token: Option<&str>) -> Option<Caller> {
        let grants = self.grants.read().expect("grants lock").clone();
        // Anonymous callers only for a gateway that started without grants; one
        // whose last grant was revoked by a reload refuses everyone.
        if grants.is_empty() && self.anonymous_allowed {
            return Some(Caller {
                grant: self.anonymous.clone(),
            });
        }
        let token = token?;
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        let mut found = None;
        for grant in grants.iter() {
            let equal: bool =
                subtle::ConstantTimeEq::ct_eq(&grant.token_sha256[..], &hash[..]).into();
            if equal && found.is_none() {
                found = Some(grant.clone());
            }
        }
        found.map(|grant| Caller { grant })
    }

    /// Follows upstream events: refreshes lists and tells clients.
    async fn watch(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<UpstreamEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                UpstreamEvent::Ready { server, .. } => {
                    self.audit
                        .log(LogLevel::Info, &format!("server {server:?} is ready"));
                    // Lists held now were fetched on this connection (a Down
                    // clears them): start-up fetched them already, so its
                    // servers' Ready events fetch nothing again. Clients hear
                    // of it only when what they may list changed.
                    if let Some(i) = self.index_of(&server) {
                        let held = self.lists.lock().expect("lists lock")[i].is_some();
                        if !held && self.refresh(i).await {
                            self.broadcast_list_changed();
                        }
                    }
                }
                UpstreamEvent::Down { server, reason } => {
                    self.audit.log(
                        LogLevel::Warn,
                        &format!("server {server:?} is down: {reason}"),
                    );
                    if let Some(i) = self.index_of(&server) {
                        self.lists.lock().expect("lists lock")[i] = None;
                        self.rebuild();
                        self.broadcast_list_changed();
                    }
                }
                UpstreamEvent::Notification {
                    server,
                    method,
                    params,
                } => match method.as_str() {
                    "notifications/tools/list_changed"
                    | "notifications/prompts/list_changed"
                    | "notifications/resources/list_changed" => {
                        // A server that says so while starting (server-everything
                        // registers tools three times as it initializes) changed
                        // nothing a client could have listed yet: pass the
                        // notification on only when the lists really differ.
                        if let Some(i) = self.index_of(&server) {
                            if self.refresh(i).await {
                                self.broadcast(json!({"jsonrpc": "2.0", "method": method}));
                            }
                        }
                    }
                    "notifications/resources/updated" => {
                        let uri = params
                            .as_ref()
                            .and_then(|p| p.get("uri"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        let sessions = self
                            .subscriptions
                            .lock()
                            .expect("subscriptions lock")
                            .get(&uri)
                            .cloned()
                            .unwrap_or_default();
                        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
                        for session in sessions {
                            self.send_to_session(&session, &message);
                        }
                    }
                    _ => {
                        let mut message = json!({"jsonrpc": "2.0", "method": method});
                        if let Some(params) = params {
                            message["params"] = params;
                        }
                        // Untied to a request (log messages, ...): only to the
                        // sessions whose grant may reach this server.
                        self.broadcast_from(Some(&server), message);
                    }
                },
            }
        }
    }

    fn index_of(&self, server: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == server)
    }

    /// Fetches one server's lists again and rebuilds the catalogue; true
    /// when they differ from the ones held before.
    async fn refresh(&self, index: usize) -> bool {
        let upstream = &self.servers[index].upstream;
        let Some(info) = upstream.info() else {
            return false;
        };
        let caps = &info.capabilities;
        let mut lists = ServerLists::default();
        if caps.get("tools").is_some() {
            lists.tools = self.list_all(upstream, "tools/list", "tools").await;
        }
        if caps.get("prompts").is_some() {
            lists.prompts = self.list_all(upstream, "prompts/list", "prompts").await;
        }
        if caps.get("resources").is_some() {
            lists.resources = self.list_all(upstream, "resources/list", "resources").await;
            lists.templates = self
                .list_all(upstream, "resources/templates/list", "resourceTemplates")
                .await;
        }
        self.check_pins(index, &lists.tools);
        let changed = {
            let mut all = self.lists.lock().expect("lists lock");
            let changed = all[index].as_ref() != Some(&lists);
            all[index] = Some(lists);
            changed
        };
        self.rebuild();
        changed
    }

    /// Records each listed definition against its pin, and holds back the
    /// tools whose definition changed (unless every policy that applies says
    /// `pins.on_change: warn`).
    fn check_pins(&self, index: usize, tools: &[Value]) {
        let server = &self.servers[index];
        let mut policies: Vec<Arc<Policy>> = [
            self.policy.read().expect("policy lock").clone(),
            self.server_policy(index),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Every grant's own policy counts too: one that blocks changed tools wins.
        policies.extend(
            self.grants
                .read()
                .expect("grants lock")
                .iter()
                .filter_map(|g| g.policy.clone()),
        );
        let block = policies.is_empty() || policies.iter().any(|p| p.blocks_changed_tools());
        let now = self.clock.now_ms();
        let mut held = self.held_back.write().expect("held-back lock");
        held.retain(|(i, _)| *i != index);
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            match self.pins.observe(&server.name, tool, now) {
                Ok(toolgate_pins::Observed::Changed { first }) => {
                    if first {
                        self.audit.log(
                            LogLevel::Warn,
                            &format!(
                                "tool {name:?} of server {:?} changed its definition since it was pinned: {} (toolgate pins diff {}/{name})",
                                server.name,
                                if block { "held back until the change is accepted" } else { "allowed (pins.on_change: warn)" },
                                server.name
                            ),
                        );
                        if self.audit.enabled() {
                            self.audit.record(Record {
                                time: now,
                                grant: String::new(),
                                session: String::new(),
                                server: Some(server.name.clone()),
                                tool: name.to_string(),
                                decision: if block {
                                    "pin_changed"
                                } else {
                                    "pin_changed_warn"
                                },
                                rule: "pins".into(),
                                reason: Some(
                                    "the tool's definition differs from the pinned one".into(),
                                ),
                                counters: Vec::new(),
                                decision_us: 0.0,
                                latency_ms: None,
                                outcome: Outcome::Refused,
                                args_sha256: String::new(),
                                args: None,
                                trace: None,
                                intent: None,
                            });
                        }
                    }
                    if block {
                        held.insert((index, name.to_string()));
                    }
                }
                Ok(_) => {}
                Err(_) if self.pins_fail_open => {}
                Err(e) => {
                    // Fail closed: a definition that cannot be checked is held back.
                    self.audit.log(
                        LogLevel::Error,
                        &format!("pins: {e}; tool {name:?} is held back"),
                    );
                    held.insert((index, name.to_string()));
                }
            }
        }
    }

    fn is_held_back(&self, server: usize, original: &str) -> bool {
        let key = (server, original.to_string());
        if !self
            .held_back
            .read()
            .expect("held-back lock")
            .contains(&key)
        {
            return false;
        }
        // Accepted since (`toolgate pins accept`, perhaps on another machine)?
        let name = &self.servers[server].name;
        match self.pins.get(name, original) {
            Ok(Some(pin)) if !pin.is_changed() => {
                self.held_back.write().expect("held-back lock").remove(&key);
                self.broadcast_list_changed();
                false
            }
            _ => true,
        }
    }

    async fn list_all(&self, upstream: &Upstream, method: &str, field: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..1000 {
            let params = cursor.take().map(|c| json!({ "cursor": c }));
            match upstream.request(method, params, None).await {
                Ok(mut result) => {
                    if let Some(Value::Array(items)) = result.get_mut(field).map(Value::take) {
                        out.extend(items);
                    }
                    match result.get("nextCursor") {
                        Some(c) if !c.is_null() => cursor = Some(c.clone()),
                        _ => break,
                    }
                }
                Err(e) => {
                    self.audit.log(LogLevel::Warn, &format!("{method}: {e}"));
                    break;
                }
            }
        }
        out
    }

    fn rebuild(&self) {
        let lists = self.lists.lock().expect("lists lock").clone();
        let catalog = Catalog::build(&self.naming, &lists, &self.separator);
        for conflict in &catalog.conflicts {
            self.audit.log(LogLevel::Warn, conflict);
        }
        *self.catalog.write().expect("catalog lock") = Arc::new(catalog);
    }

    fn broadcast_list_changed(&self) {
        self.broadcast(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
    }

    fn broadcast(&self, message: Value) {
        self.broadcast_from(None, message);
    }

    /// To every open stream; with `server`, only to sessions whose grant may
    /// reach that server.
    fn broadcast_from(&self, server: Option<&str>, message: Value) {
        let mut streams = self.streams.lock().expect("streams lock");
        for stream in streams.values_mut() {
            let reaches = match (server, &stream.servers) {
                (Some(server), Some(allowed)) => allowed.iter().any(|a| a == server),
                _ => true,
            };
            if reaches {
                stream.senders.retain(|s| s.send(message.clone()).is_ok());
            }
        }
        streams.retain(|_, s| !s.senders.is_empty());
    }

    /// Sends a message on a session's GET streams; false when it has none.
    fn send_to_session(&self, session: &str, message: &Value) -> bool {
        match self.streams.lock().expect("streams lock").get_mut(session) {
            Some(stream) => {
                stream.senders.retain(|s| s.send(message.clone()).is_ok());
                !stream.senders.is_empty()
            }
            None => false,
        }
    }

    /// A client's `notifications/roots/list_changed`: passed on to the
    /// session's own per-session server instances (a shared server serves
    /// many sessions, whose roots differ, so it is not told).
    pub async fn roots_changed(&self, session: &str) {
        let owned: Vec<Upstream> = self
            .instances
            .lock()
            .await
            .iter()
            .filter(|((_, owner), _)| owner == session)
            .map(|(_, instance)| instance.upstream.clone())
            .collect();
        for upstream in owned {
            upstream
                .notify("notifications/roots/list_changed", None)
                .await;
        }
    }

    /// Registers a GET stream for a session.
    pub fn open_stream(&self, caller: &Caller, session: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut streams = self.streams.lock().expect("streams lock");
        let stream = streams.entry(session.to_string()).or_default();
        stream.servers = caller.grant.servers.clone();
        stream.senders.push(tx);
        rx
    }

    /// The upstream that serves a session's requests to a server: the shared
    /// connection, or the session's own instance of a per-session server
    /// (started on first use).
    async fn upstream_for(
        self: &Arc<Self>,
        server: usize,
        session: &str,
    ) -> Result<Upstream, RpcError> {
        let Some(spec) = &self.servers[server].per_session else {
            return Ok(self.servers[server].upstream.clone());
        };
        let key = (server, session.to_string());
        let mut instances = self.instances.lock().await;
        if let Some(instance) = instances.get_mut(&key) {
            instance.last_used = Instant::now();
            return Ok(instance.upstream.clone());
        }
        // Its own events: list changes of one instance concern its session only.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let owner = Arc::new(SessionLink {
            gateway: Arc::downgrade(self),
            session: session.to_string(),
        });
        let weak = Arc::downgrade(self);
        let upstream = {
            let _gateways_runtime = self.runtime.enter();
            let upstream = Upstream::start_owned(spec.clone(), tx, Some(owner));
            let owner = session.to_string();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let Some(gateway) = weak.upgrade() else {
                        return;
                    };
                    if let UpstreamEvent::Notification { method, params, .. } = event {
                        let mut message = json!({"jsonrpc": "2.0", "method": method});
                        if let Some(params) = params {
                            message["params"] = params;
                        }
                        gateway.send_to_session(&owner, &message);
                    }
                }
            });
            upstream
        };
        instances.insert(
            key,
            Instance {
                upstream: upstream.clone(),
                last_used: Instant::now(),
            },
        );
        drop(instances);
        if !upstream.wait_ready(Duration::from_secs(30)).await {
            return Err(rpc(
                INTERNAL_ERROR,
                &format!(
                    "server {:?}: the session's instance did not start",
                    self.servers[server].name
                ),
            ));
        }
        Ok(upstream)
    }

    /// Stops per-session instances unused for `idle`.
    async fn reap_instances(&self, idle: Duration) {
        let stale: Vec<Instance> = {
            let mut instances = self.instances.lock().await;
            let keys: Vec<_> = instances
                .iter()
                .filter(|(_, i)| i.last_used.elapsed() > idle)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| instances.remove(&k))
                .collect()
        };
        for instance in stale {
            instance.upstream.shutdown(Duration::from_secs(2)).await;
        }
    }

    /// The streamed answer a `Last-Event-ID` names, if this process has it and
    /// it belongs to the session.
    pub fn resumable(&self, session: &str, stream: &str) -> Option<Arc<EventLog>> {
        let log = self.logs.lock().expect("logs lock").get(stream).cloned()?;
        (log.session == session).then_some(log)
    }

    /// Ends a session: its streams, subscriptions and per-session instances (DELETE).
    pub async fn close_session(&self, session: &str) {
        self.end_session(session);
        let mine: Vec<Instance> = {
            let mut instances = self.instances.lock().await;
            let keys: Vec<_> = instances
                .keys()
                .filter(|(_, s)| s == session)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| instances.remove(&k))
                .collect()
        };
        for instance in mine {
            instance.upstream.shutdown(Duration::from_secs(2)).await;
        }
    }

    /// Ends a session's streams and subscriptions.
    fn end_session(&self, session: &str) {
        self.streams.lock().expect("streams lock").remove(session);
        for sessions in self
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .values_mut()
        {
            sessions.retain(|s| s != session);
        }
    }

    /// A new session for an `initialize` request; returns the answer and the
    /// token. `versions`: what the transport speaks, the first when the
    /// client asks for none of them ([`HANDSHAKE_VERSIONS`] for `/mcp`,
    /// [`LEGACY_VERSIONS`] for `/sse`).
    pub fn initialize(
        &self,
        caller: &Caller,
        id: &Value,
        params: &Value,
        versions: &[&'static str],
    ) -> (Value, String) {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = versions
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&versions[0]);
        let session = Session {
            id: random_id(),
            grant: caller.grant.name.clone(),
            version: version.to_string(),
            caps: params.get("capabilities").cloned().unwrap_or(json!({})),
            created: self.clock.now_ms() / 1000,
        };
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": self.capabilities(caller),
            "serverInfo": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")},
        });
        if let Some(instructions) = self.instructions(caller) {
            result["instructions"] = Value::String(instructions);
        }
        (result_response(id, result), self.key.seal(&session))
    }

    /// The session a token stands for, if it is valid, unexpired and the
    /// caller's own.
    pub fn session(&self, caller: &Caller, token: &str) -> Option<Arc<Session>> {
        let session = self.open_token(token)?;
        let age = (self.clock.now_ms() / 1000).saturating_sub(session.created);
        (session.grant == caller.grant.name && age <= self.session_ttl.as_secs()).then_some(session)
    }

    /// [`Gateway::session`], unless the session was ended (`DELETE`) on
    /// this or another process sharing the state. A store that cannot say
    /// is a refusal too: a session that may have ended is never continued.
    pub fn live_session(
        &self,
        caller: &Caller,
        token: &str,
    ) -> Result<Arc<Session>, SessionRefused> {
        let session = self
            .session(caller, token)
            .ok_or(SessionRefused::NotFound)?;
        match self
            .revocations
            .is_revoked(&session.id, self.clock.now_ms())
        {
            Ok(false) => Ok(session),
            Ok(true) => Err(SessionRefused::NotFound),
            Err(e) => Err(SessionRefused::Unavailable(e.to_string())),
        }
    }

    /// Records that `session` has ended, for every process sharing the
    /// state, until it would have expired anyway.
    pub fn revoke_session(
        &self,
        session: &Session,
    ) -> Result<(), toolgate_revocations::RevocationError> {
        // `session` accepts an age up to the TTL in whole seconds.
        let until_ms = session
            .created
            .saturating_add(self.session_ttl.as_secs())
            .saturating_add(1)
            .saturating_mul(1000);
        self.revocations
            .revoke(&session.id, self.clock.now_ms(), until_ms)
    }

    /// Opens a session token, through a bounded cache of tokens already
    /// opened: a token never changes meaning, and decrypting it on every
    /// request costs more than the rest of the request's bookkeeping.
    fn open_token(&self, token: &str) -> Option<Arc<Session>> {
        if let Some(session) = self.opened.lock().expect("opened lock").get(token) {
            return Some(session.clone());
        }
        let session = Arc::new(self.key.open(token)?);
        let mut opened = self.opened.lock().expect("opened lock");
        if opened.len() >= OPENED_CAPACITY {
            opened.clear();
        }
        opened.insert(token.to_string(), session.clone());
        Some(session)
    }

    /// The pseudo-session of a stateless (2026-07-28) request.
    pub fn stateless_session(&self, caller: &Caller, meta: &Value) -> Arc<Session> {
        Arc::new(Session {
            id: format!("stateless:{}", caller.grant.name),
            grant: caller.grant.name.clone(),
            version: STATELESS_VERSION.into(),
            caps: meta.get(META_CAPS).cloned().unwrap_or(json!({})),
            created: self.clock.now_ms() / 1000,
        })
    }

    fn reachable(&self, caller: &Caller) -> impl Iterator<Item = (usize, &Server)> + '_ {
        let allowed = caller.grant.servers.clone();
        self.servers
            .iter()
            .enumerate()
            .filter(move |(_, s)| allowed.as_ref().is_none_or(|a| a.contains(&s.name)))
    }

    fn may_reach(&self, caller: &Caller, server: usize) -> bool {
        caller
            .grant
            .servers
            .as_ref()
            .is_none_or(|a| a.contains(&self.servers[server].name))
    }

    fn capabilities(&self, caller: &Caller) -> Value {
        let mut caps = json!({"tools": {"listChanged": true}, "logging": {}});
        for (_, server) in self.reachable(caller) {
            let Some(info) = server.upstream.info() else {
                continue;
            };
            let up = &info.capabilities;
            if up.get("prompts").is_some() {
                caps["prompts"] = json!({"listChanged": true});
            }
            if up.get("resources").is_some() {
                caps["resources"] = json!({"listChanged": true, "subscribe": true});
            }
            if up.get("completions").is_some() {
                caps["completions"] = json!({});
            }
        }
        caps
    }

    fn instructions(&self, caller: &Caller) -> Option<String> {
        let parts: Vec<String> = self
            .reachable(caller)
            .filter_map(|(_, s)| s.upstream.info()?.instructions.clone())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The policy over gateway names for a caller.
    fn gateway_policy(&self, caller: &Caller) -> Option<Arc<Policy>> {
        caller
            .grant
            .policy
            .clone()
            .or_else(|| self.policy.read().expect("policy lock").clone())
    }

    fn server_policy(&self, server: usize) -> Option<Arc<Policy>> {
        self.servers[server]
            .policy
            .read()
            .expect("policy lock")
            .clone()
    }

    fn is_listed(&self, caller: &Caller, server: usize, gateway: &str, original: &str) -> bool {
        !self.is_held_back(server, original)
            && self.may_reach(caller, server)
            && self
                .gateway_policy(caller)
                .is_none_or(|p| p.is_listed(gateway))
            && self
                .server_policy(server)
                .is_none_or(|p| p.is_listed(original))
    }

    /// Puts new policies in force (hot reload): the gateway's, and each named
    /// server's own. Counters are untouched; clients are told the tool list
    /// may have changed.
    pub fn set_policies(
        &self,
        gateway: Option<Arc<Policy>>,
        servers: &[(String, Option<Arc<Policy>>)],
    ) {
        *self.policy.write().expect("policy lock") = gateway;
        for (name, policy) in servers {
            if let Some(server) = self.servers.iter().find(|s| &s.name == name) {
                *server.policy.write().expect("policy lock") = policy.clone();
            }
        }
        self.broadcast_list_changed();
    }

    /// Answers one request. `id` is the client's id.
    pub async fn request(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        method: &str,
        params: Value,
    ) -> Reply {
        // A 2026-07-28 client's retry of a call its (stateless) server
        // answered input-required: the same call going on.
        let mut relayed = None;
        if ctx.era == Era::Stateless {
            if let Some(state) = params.get("requestState").and_then(Value::as_str) {
                if let Some(token) = state.strip_prefix(CALL_STATE) {
                    return self.resume(ctx, id, method, token, &params).await;
                }
                if let Some(sealed) = state.strip_prefix(UPSTREAM_STATE) {
                    match Relayed::open(&self.key, sealed) {
                        // Boxed: every call's future stays as small as before.
                        Some(call) if method == "tools/call" => relayed = Some(Box::new(call)),
                        _ => return Reply::Json(foreign_state(id)),
                    }
                }
            }
        }
        let answer =
            |result: Result<Value, RpcError>| Reply::Json(self.answer(ctx, id, method, result));
        match method {
            "ping" => answer(Ok(json!({}))),
            "server/discover" => answer(Ok(self.discover(&ctx.caller))),
            "tools/list" => {
                let catalog = self.catalog();
                let tools: Vec<Value> = catalog
                    .tools
                    .iter()
                    .filter(|e| {
                        self.is_listed(
                            &ctx.caller,
                            e.server,
                            e.value["name"].as_str().unwrap_or_default(),
                            &e.original,
                        )
                    })
                    .map(|e| e.value.clone())
                    .collect();
                answer(Ok(json!({ "tools": tools })))
            }
            "prompts/list" => {
                let catalog = self.catalog();
                let prompts: Vec<Value> = catalog
                    .prompts
                    .iter()
                    .filter(|e| self.may_reach(&ctx.caller, e.server))
                    .map(|e| e.value.clone())
                    .collect();
                answer(Ok(json!({ "prompts": prompts })))
            }
            "resources/list" => {
                let catalog = self.catalog();
                let resources: Vec<Value> = catalog
                    .resources
                    .iter()
                    .filter(|(s, _)| self.may_reach(&ctx.caller, *s))
                    .map(|(_, r)| r.clone())
                    .collect();
                answer(Ok(json!({ "resources": resources })))
            }
            "resources/templates/list" => {
                let catalog = self.catalog();
                let templates: Vec<Value> = catalog
                    .templates
                    .iter()
                    .filter(|(s, _)| self.may_reach(&ctx.caller, *s))
                    .map(|(_, r)| r.clone())
                    .collect();
                answer(Ok(json!({ "resourceTemplates": templates })))
            }
            "logging/setLevel" => {
                for (_, server) in self.reachable(&ctx.caller) {
                    if server
                        .upstream
                        .info()
                        .is_some_and(|i| i.capabilities.get("logging").is_some())
                    {
                        let _ = server
                            .upstream
                            .request(method, Some(params.clone()), None)
                            .await;
                    }
                }
                answer(Ok(json!({})))
            }
            "tools/call" => self.call_tool(ctx, id, params, relayed).await,
            "prompts/get" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let catalog = self.catalog();
                match catalog
                    .prompt(name)
                    .filter(|e| self.may_reach(&ctx.caller, e.server))
                {
                    Some(entry) => {
                        let mut params = params.clone();
                        params["name"] = Value::String(entry.original.clone());
                        self.forward(ctx, id, entry.server, method, params, None)
                            .await
                    }
                    None => answer(Err(rpc(INVALID_PARAMS, &format!("Unknown prompt: {name}")))),
                }
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let catalog = self.catalog();
                match catalog
                    .resource_server(&uri)
                    .filter(|s| self.may_reach(&ctx.caller, *s))
                {
                    Some(server) => {
                        if method == "resources/subscribe" {
                            self.subscriptions
                                .lock()
                                .expect("subscriptions lock")
                                .entry(uri)
                                .or_default()
                                .push(ctx.session.id.clone());
                        } else if method == "resources/unsubscribe" {
                            if let Some(s) = self
                                .subscriptions
                                .lock()
                                .expect("subscriptions lock")
                                .get_mut(&uri)
                            {
                                s.retain(|s| *s != ctx.session.id);
                            }
                        }
                        self.forward(ctx, id, server, method, params, None).await
                    }
                    None => answer(Err(rpc(-32002, &format!("Resource not found: {uri}")))),
                }
            }
            "completion/complete" => {
                let reference = params.get("ref").cloned().unwrap_or(Value::Null);
                let catalog = self.catalog();
                let target = match reference.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => catalog
                        .prompt(
                            reference
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        )
                        .map(|e| (e.server, Some(e.original.clone()))),
                    Some("ref/resource") => catalog
                        .resource_server(
                            reference
                                .get("uri")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        )
                        .map(|s| (s, None)),
                    _ => None,
                };
                match target.filter(|(s, _)| self.may_reach(&ctx.caller, *s)) {
                    Some((server, original)) => {
                        let mut params = params.clone();
                        if let Some(original) = original {
                            params["ref"]["name"] = Value::String(original);
                        }
                        self.forward(ctx, id, server, method, params, None).await
                    }
                    None => answer(Err(rpc(
                        INVALID_PARAMS,
                        "Invalid params: unknown completion reference",
                    ))),
                }
            }
            _ => answer(Err(rpc(
                METHOD_NOT_FOUND,
                &format!("Method not found: {method}"),
            ))),
        }
    }

    fn discover(&self, caller: &Caller) -> Value {
        let mut result = json!({
            "supportedVersions": [STATELESS_VERSION, "2025-11-25", "2025-06-18"],
            "capabilities": self.capabilities(caller),
            "serverInfo": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")},
        });
        if let Some(instructions) = self.instructions(caller) {
            result["instructions"] = Value::String(instructions);
        }
        result
    }

    /// A JSON-RPC answer in the request's era: 2026-07-28 results carry
    /// `resultType`, and cacheable ones their caching directives.
    fn answer(
        &self,
        ctx: &Context,
        id: &Value,
        method: &str,
        result: Result<Value, RpcError>,
    ) -> Value {
        match result {
            Ok(mut result) => {
                if ctx.era == Era::Stateless {
                    if let Value::Object(map) = &mut result {
                        map.entry("resultType").or_insert(json!("complete"));
                        if is_cacheable(method) {
                            map.entry("ttlMs").or_insert(json!(0));
                            map.entry("cacheScope").or_insert(json!("private"));
                        }
                    }
                }
                result_response(id, result)
            }
            Err(e) => error_response(id, e.code, &e.message, e.data),
        }
    }

    /// The reply to a forwarded request: an answer kept as text goes out as
    /// it came (in the handshake era, which adds nothing to a result).
    fn reply(
        &self,
        ctx: &Context,
        id: &Value,
        method: &str,
        result: Result<Answer, RpcError>,
    ) -> Reply {
        match result {
            Ok(Answer::Raw(raw)) if ctx.era == Era::Handshake => {
                let mut out = Vec::with_capacity(raw.get().len() + 40);
                out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
                serde_json::to_writer(&mut out, id).expect("an id serialises");
                out.extend_from_slice(br#","result":"#);
                out.extend_from_slice(raw.get().as_bytes());
                out.push(b'}');
                Reply::Raw(out.into())
            }
            other => Reply::Json(self.answer(ctx, id, method, other.and_then(parsed))),
        }
    }

    /// `relayed`: the call a retry continues (its sealed `requestState`).
    async fn call_tool(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        params: Value,
        relayed: Option<Box<Relayed>>,
    ) -> Reply {
        let received = Instant::now();
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Reply::Json(error_response(
                id,
                INVALID_PARAMS,
                "Invalid params: tools/call needs a name",
                None,
            ));
        };
        // Borrowed, not copied: the call's params go upstream as they are.
        let arguments = params.get("arguments").unwrap_or(&Value::Null);
        if !(arguments.is_object() || arguments.is_null()) {
            return Reply::Json(error_response(
                id,
                INVALID_PARAMS,
                "Invalid params: params.arguments must be an object",
                None,
            ));
        }
        let catalog = self.catalog();
        let Some(entry) = catalog
            .tool(name)
            .filter(|e| self.may_reach(&ctx.caller, e.server))
        else {
            self.audit_refusal(
                ctx,
                name,
                &Decision::Unknown {
                    rule: toolgate_policy::RuleRef::clone(&unknown_rule()),
                },
                arguments,
                received,
                None,
            );
            return Reply::Json(unknown_tool(id, name));
        };
        let server = &self.servers[entry.server];
        if let Some(relayed) = &relayed {
            let same_call = relayed.grant == ctx.caller.grant.name
                && relayed.server == server.name
                && relayed.tool == entry.original
                && relayed.args == args_sha256(arguments)
                && relayed.expires >= self.clock.now_ms();
            // Taken once: a replay would reach the server again, uncounted.
            if !same_call || !self.spent.take(relayed, self.clock.now_ms()) {
                return Reply::Json(foreign_state(id));
            }
        }
        if self.is_held_back(entry.server, &entry.original) {
            let text = format!(
                "toolgate held back this call to \"{name}\": the server changed the tool's definition since it was pinned, and the change has not been accepted (toolgate pins diff {server}/{tool}, then toolgate pins accept {server}/{tool})",
                server = server.name,
                tool = entry.original
            );
            let facts = json!({"decision": "pin_changed", "tool": name, "reason": "the tool's definition changed since it was pinned"});
            return Reply::Json(self.answer(ctx, id, "tools/call", Ok(held_result(text, facts))));
        }
        let now = self.clock.now_ms();
        let gateway_policy = self.gateway_policy(&ctx.caller);
        let server_policy = self.server_policy(entry.server);
        let mut layers = Vec::with_capacity(2);
        let gateway_call = Call {
            tool: name,
            arguments,
            arguments_text: ctx.arguments_text.as_deref(),
            grant: &ctx.caller.grant.name,
            session: &ctx.session.id,
        };
        if let Some(policy) = gateway_policy.as_deref() {
            layers.push(Layer {
                policy,
                call: gateway_call,
                key_prefix: "",
            });
        }
        if let Some(policy) = server_policy.as_deref() {
            layers.push(Layer {
                policy,
                call: Call {
                    tool: &entry.original,
                    ..gateway_call
                },
                key_prefix: &server.key_prefix,
            });
        }
        let decision = if layers.is_empty() {
            // Configuration guarantees a policy for every server; fail closed anyway.
            Decision::Unknown {
                rule: unknown_rule(),
            }
        } else {
            match plan_layers(&layers) {
                Planned::Decided(decision) => decision,
                // A retry was counted when the call began.
                Planned::Draw(plan) if plan.draws.is_empty() || relayed.is_some() => {
                    plan.conclude(Ok(Default::default()))
                }
                Planned::Draw(plan) => {
                    let draws = plan.draws.clone();
                    let result = self.store.acquire_async(draws, now).await;
                    plan.conclude(result)
                }
            }
        };
        if let Some(relayed) = relayed {
            // Checked again (a tool denied or hidden since stays refused), but
            // neither counted nor audited again; an approval was given when
            // the call began.
            if !matches!(
                decision,
                Decision::Allow { .. } | Decision::ApprovalRequired { .. }
            ) {
                return self.refuse(ctx, id, name, &decision, arguments, received, &server.name);
            }
            let mut upstream_params = params;
            upstream_params["name"] = Value::String(entry.original.clone());
            if let Value::Object(p) = &mut upstream_params {
                match relayed.state {
                    Some(state) => p.insert("requestState".into(), Value::String(state)),
                    None => p.remove("requestState"),
                };
            }
            return self
                .forward(ctx, id, entry.server, "tools/call", upstream_params, None)
                .await;
        }
        if let Decision::ApprovalRequired { .. } = &decision {
            return self
                .held_call(
                    ctx,
                    id,
                    entry.server,
                    &entry.original,
                    name,
                    params.clone(),
                    arguments.clone(),
                    decision,
                    received,
                )
                .await;
        }
        let Decision::Allow { grant: taken, .. } = &decision else {
            return self.refuse(ctx, id, name, &decision, arguments, received, &server.name);
        };
        let taken = taken.clone();
        let record = self.record(
            ctx,
            name,
            &decision,
            arguments,
            received,
            Some(&server.name),
        );
        let mut upstream_params = params;
        upstream_params["name"] = Value::String(entry.original.clone());
        let on_done = call_done(self.clone(), taken, record, received);
        self.forward(
            ctx,
            id,
            entry.server,
            "tools/call",
            upstream_params,
            Some(on_done),
        )
        .await
    }

    fn record(
        &self,
        ctx: &Context,
        tool: &str,
        decision: &Decision,
        arguments: &Value,
        received: Instant,
        server: Option<&str>,
    ) -> Option<Record> {
        let record = self.call_record(ctx, tool, arguments, received, server)?;
        let (kind, rule, reason) = decision_facts(decision);
        Some(Record {
            decision: kind,
            rule,
            reason,
            counters: match decision {
                Decision::Allow { grant, .. } => grant.taken.clone(),
                _ => Vec::new(),
            },
            ..record
        })
    }

    /// The audit record of a call, before the decision's facts are filled in;
    /// `None` when nothing would receive it (then nothing is built or hashed).
    fn call_record(
        &self,
        ctx: &Context,
        tool: &str,
        arguments: &Value,
        received: Instant,
        server: Option<&str>,
    ) -> Option<Record> {
        self.audit.enabled().then(|| Record {
            time: self.clock.now_ms(),
            grant: ctx.caller.grant.name.clone(),
            session: ctx.session.id.clone(),
            server: server.map(str::to_string),
            tool: tool.to_string(),
            decision: "",
            rule: String::new(),
            reason: None,
            counters: Vec::new(),
            decision_us: received.elapsed().as_secs_f64() * 1e6,
            latency_ms: None,
            outcome: Outcome::Refused,
            // Only the audit trail reads the hash: metrics and traces alone skip it.
            args_sha256: if self.audit.keeps_records() {
                args_sha256(arguments)
            } else {
                String::new()
            },
            args: self.audit_args.then(|| arguments.clone()),
            trace: Some(Box::new(CallTrace {
                traceparent: ctx.trace.as_ref().map(|t| t.0.clone()),
                tracestate: ctx.trace.as_ref().and_then(|t| t.1.clone()),
                protocol_version: Some(ctx.session.version.clone()),
                ..CallTrace::received_at(received)
            })),
            intent: None,
        })
    }

    fn audit_refusal(
        &self,
        ctx: &Context,
        tool: &str,
        decision: &Decision,
        arguments: &Value,
        received: Instant,
        server: Option<&str>,
    ) {
        if let Some(record) = self.record(ctx, tool, decision, arguments, received, server) {
            self.audit.record(record);
        }
    }

    /// Sends a request to a server on the client's behalf. Whatever the server
    /// sends about it before the answer (its own requests, progress) turns the
    /// reply into a stream.
    async fn forward(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        server: usize,
        method: &str,
        params: Value,
        on_done: Option<OnDone>,
    ) -> Reply {
        self.forward_gated(ctx, id, server, method, params, on_done, None)
            .await
    }

    /// [`Gateway::forward`], with a gate run first (on the same stream, so it
    /// can ask the client): it lets the request through, with what to do when
    /// it is answered, or answers in the server's place.
    #[allow(clippy::too_many_arguments)]
    async fn forward_gated(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        server: usize,
        method: &str,
        mut params: Value,
        on_done: Option<OnDone>,
        gate: Option<Gate>,
    ) -> Reply {
        strip_envelope(&mut params);
        let rx = OutboxRx(Arc::new(Outbox::default()));
        let link = Arc::new(ClientLink {
            gateway: Arc::downgrade(self),
            session: ctx.session.clone(),
            tx: rx.0.clone(),
        });
        let upstream = match self.upstream_for(server, &ctx.session.id).await {
            Ok(upstream) => upstream,
            Err(e) => {
                if let Some(on_done) = on_done {
                    on_done(&Err(CallError::Unavailable(e.message.clone())));
                }
                return Reply::Json(self.answer(ctx, id, method, Err(e)));
            }
        };
        let method_owned = method.to_string();
        // A stateless server may answer input-required (see `rounds`). Boxed:
        // the call's future stays as small as it was for every other server.
        let rounds = if !upstream.is_stateless() {
            None
        } else if ctx.era == Era::Handshake {
            Some(Box::new(Rounds::Ask))
        } else if method == "tools/call" {
            Some(Box::new(Rounds::Relay(
                self.relayed(ctx, server, &params),
                self.clone(),
            )))
        } else {
            None
        };
        // The call runs inside this request's future (no task of its own) until
        // the server sends something about it; then it moves to a task that
        // streams to the client.
        let (abort, registration) = futures_util::future::AbortHandle::new_pair();
        let task: CallTask = Box::pin(futures_util::future::Abortable::new(
            async move {
                let on_done = match gate {
                    None => on_done,
                    Some(gate) => match gate(link.clone()).await {
                        GateOutcome::Proceed(on_done) => on_done,
                        GateOutcome::Answer(result) => return Ok(Answer::Parsed(result)),
                    },
                };
                let result = match rounds {
                    None => {
                        upstream
                            .request_answer(&method_owned, Some(params), Some(link))
                            .await
                    }
                    Some(rounds) => {
                        Box::pin(rounds.run(&upstream, &method_owned, params, link)).await
                    }
                };
                if let Some(on_done) = on_done {
                    on_done(&result);
                }
                result
            },
            registration,
        ));
        let key = (ctx.session.id.clone(), id.to_string());
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.clone(), abort.clone());
        let guard = AbortOnDrop {
            handle: abort,
            gateway: self.clone(),
            key,
        };
        self.drive(ctx, id, method, server, task, rx, guard).await
    }

    /// Audits a refused call and answers it with the refusal.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        ctx: &Context,
        id: &Value,
        name: &str,
        decision: &Decision,
        arguments: &Value,
        received: Instant,
        server: &str,
    ) -> Reply {
        self.audit_refusal(ctx, name, decision, arguments, received, Some(server));
        Reply::Json(refusal(id, name, decision, ctx.era).expect("not an allow"))
    }

    /// What a sealed `requestState` of `tools/call` to `server` binds.
    fn relayed(&self, ctx: &Context, server: usize, params: &Value) -> Relayed {
        Relayed {
            grant: ctx.caller.grant.name.clone(),
            server: self.servers[server].name.clone(),
            tool: params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            args: args_sha256(params.get("arguments").unwrap_or(&Value::Null)),
            state: None,
            expires: self.clock.now_ms() + PARK_TTL.as_millis() as u64,
            nonce: String::new(),
        }
    }

    /// Waits for a forwarded request's answer. What the server sends about
    /// it first turns the reply into a stream; a request from the server to a
    /// 2026-07-28 client (which has no stream to receive it on) parks the
    /// call and answers with an input-required result instead.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        method: &str,
        server: usize,
        mut task: CallTask,
        rx: OutboxRx,
        guard: AbortOnDrop,
    ) -> Reply {
        tokio::select! {
            // The server's messages first: one queued as the answer arrives
            // (a request it sent just before) must not be dropped with the
            // box; the stream below carries it, then the answer.
            biased;
            first = rx.0.recv() => {
                if ctx.era == Era::Stateless && is_request(&first) {
                    let parked = Parked::new(ctx, method, server, task, rx, guard);
                    return Reply::Json(self.park(id, parked, first));
                }
                let server_name = self.servers[server].name.clone();
                let method_name = method.to_string();
                let log = Arc::new(EventLog::new(random_id(), ctx.session.id.clone()));
                log.push(first);
                self.logs.lock().expect("logs lock").insert(log.id.clone(), log.clone());
                let gateway = self.clone();
                let ctx = ctx.clone();
                let id = id.clone();
                let writer = log.clone();
                // The call goes on if the client's connection breaks: it can
                // resume the stream (a broken connection is not a cancellation).
                tokio::spawn(async move {
                    let mut task = task;
                    loop {
                        tokio::select! {
                            biased;
                            message = rx.0.recv() => {
                                if ctx.era == Era::Stateless && is_request(&message) {
                                    let parked = Parked::new(&ctx, &method_name, server, task, rx, guard);
                                    writer.push(gateway.park(&id, parked, message));
                                    writer.finish();
                                    break;
                                }
                                writer.push(message)
                            }
                            result = &mut task => {
                                while let Some(message) = rx.0.try_recv() {
                                    writer.push(message);
                                }
                                writer.push(gateway.answer(&ctx, &id, &method_name, flatten(result, &server_name).and_then(parsed)));
                                writer.finish();
                                drop(guard);
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(KEEP).await;
                    gateway.logs.lock().expect("logs lock").remove(&writer.id);
                });
                Reply::Stream(log)
            }
            result = &mut task => {
                drop(guard);
                self.reply(ctx, id, method, flatten(result, &self.servers[server].name))
            }
        }
    }

    /// Parks a call whose server asked a 2026-07-28 client something, and
    /// returns the answer for the client: an input-required result with the
    /// server's requests (this one and any already queued) under their ids,
    /// and `requestState` naming the parked call. Notifications queued with
    /// them (progress, logging) are dropped: the client has no stream.
    fn park(self: &Arc<Self>, id: &Value, mut parked: Parked, first: Value) -> Value {
        let mut requests = vec![first];
        while let Some(message) = parked.rx.0.try_recv() {
            if is_request(&message) {
                requests.push(message);
            }
        }
        let mut input_requests = Map::new();
        for request in requests {
            let Some(rid) = request.get("id").and_then(Value::as_str) else {
                continue;
            };
            let mut input = Map::new();
            input.insert("method".into(), request["method"].clone());
            if let Some(params) = request.get("params") {
                input.insert("params".into(), params.clone());
            }
            parked.pending.push(rid.to_string());
            input_requests.insert(rid.to_string(), Value::Object(input));
        }
        let token = random_id();
        self.parked
            .lock()
            .expect("parked lock")
            .insert(token.clone(), parked);
        // Not retried in time: the call is dropped, which cancels it upstream.
        let gateway = Arc::downgrade(self);
        let key = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PARK_TTL).await;
            if let Some(gateway) = gateway.upgrade() {
                let expired = gateway.parked.lock().expect("parked lock").remove(&key);
                drop(expired);
            }
        });
        result_response(
            id,
            json!({
                "resultType": "input_required",
                "inputRequests": input_requests,
                "requestState": format!("{CALL_STATE}{token}"),
            }),
        )
    }

    /// A 2026-07-28 client's retry of a parked call: its `inputResponses`
    /// answer the server's requests, and the call goes on where it was. Only
    /// the grant that made the call, retrying the same method, resumes it.
    async fn resume(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        method: &str,
        token: &str,
        params: &Value,
    ) -> Reply {
        let parked = {
            let mut parked = self.parked.lock().expect("parked lock");
            match parked.get(token) {
                Some(p) if p.grant == ctx.caller.grant.name && p.method == method => {
                    parked.remove(token)
                }
                _ => None,
            }
        };
        let Some(parked) = parked else {
            return Reply::Json(error_response(
                id,
                INVALID_PARAMS,
                "Invalid params: requestState names no call held by this gateway process (it expired, belongs to another client, or was started on another process); send the call again without requestState and inputResponses",
                None,
            ));
        };
        let responses = params.get("inputResponses").and_then(Value::as_object);
        for rid in &parked.pending {
            let key = (
                parked.session.clone(),
                Value::String(rid.clone()).to_string(),
            );
            let waiter = self.waiting.lock().expect("waiting lock").remove(&key);
            if let Some(waiter) = waiter {
                let answer = match responses.and_then(|r| r.get(rid)) {
                    Some(response) => Ok(response.clone()),
                    None => Err(rpc(INTERNAL_ERROR, "the client did not answer")),
                };
                let _ = waiter.send(answer);
            }
        }
        let Parked {
            server,
            task,
            rx,
            guard,
            ..
        } = parked;
        self.drive(ctx, id, method, server, task, rx, guard).await
    }

    /// A client's answer to a server-to-client request.
    pub fn client_response(&self, session: &str, message: &Value) {
        let id = message.get("id").map(Value::to_string).unwrap_or_default();
        let waiter = self
            .waiting
            .lock()
            .expect("waiting lock")
            .remove(&(session.to_string(), id));
        if let Some(waiter) = waiter {
            let answer = match (message.get("result"), message.get("error")) {
                (Some(result), _) => Ok(result.clone()),
                (None, Some(error)) => Err(RpcError {
                    code: error
                        .get("code")
                        .and_then(Value::as_i64)
                        .unwrap_or(INTERNAL_ERROR),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    data: error.get("data").cloned(),
                }),
                _ => Err(rpc(INTERNAL_ERROR, "malformed response from the client")),
            };
            let _ = waiter.send(answer);
        }
    }

    /// `notifications/cancelled` from a client: stop the request.
    pub fn cancel(&self, session: &str, params: &Value) {
        let id = params
            .get("requestId")
            .map(Value::to_string)
            .unwrap_or_default();
        if let Some(handle) = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&(session.to_string(), id))
        {
            handle.abort();
        }
    }

    /// Stops every upstream.
    pub async fn shutdown(&self, grace: Duration) {
        let instances: Vec<Instance> = self
            .instances
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
        }
        self.audit.flush();
    }
}

/// What happens to a stateless server's input-required answer.
enum Rounds {
    /// A client of the handshake era is asked over its session; the call
    /// goes again with the answers.
    Ask,
    /// A 2026-07-28 client gets it with the state sealed (by the gateway's key).
    Relay(Relayed, Arc<Gateway>),
}

impl Rounds {
    /// Sends the request to a stateless server and sees its input-required
    /// answers through.
    async fn run(
        self: Box<Self>,
        upstream: &Upstream,
        method: &str,
        params: Value,
        link: Arc<ClientLink>,
    ) -> Result<Answer, CallError> {
        match *self {
            Rounds::Ask => {
                let again = params.clone();
                let first = upstream
                    .request_answer(method, Some(params), Some(link.clone()))
                    .await;
                crate::rounds::ask_rounds(upstream, method, again, link, first).await
            }
            Rounds::Relay(relayed, gateway) => {
                let first = upstream
                    .request_answer(method, Some(params), Some(link))
                    .await;
                crate::rounds::relay(first, relayed, &gateway.key)
            }
        }
    }
}

/// The answer to a `requestState` the gateway did not seal for this call.
fn foreign_state(id: &Value) -> Value {
    error_response(
        id,
        INVALID_PARAMS,
        "Invalid params: requestState does not belong to this call (it expired, was used already, was altered, or belongs to another client, tool or arguments); send the call again without requestState and inputResponses",
        None,
    )
}

/// Results of these methods are cacheable in 2026-07-28 (`ttlMs`, `cacheScope`).
fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "server/discover"
    )
}

fn unknown_rule() -> toolgate_policy::RuleRef {
    // The rule named for calls to tools no server offers.
    toolgate_policy::RuleRef::from_static("unknown")
}

fn rpc(code: i64, message: &str) -> RpcError {
    RpcError {
        code,
        message: message.to_string(),
        data: None,
    }
}

fn flatten(
    joined: Result<Result<Answer, CallError>, futures_util::future::Aborted>,
    server: &str,
) -> Result<Answer, RpcError> {
    match joined {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(CallError::Rpc(e))) => Err(e),
        Ok(Err(e)) => Err(RpcError {
            code: INTERNAL_ERROR,
            message: format!("server {server:?}: {e}"),
            data: Some(json!({"toolgate": {"reason": "upstream_unavailable", "server": server}})),
        }),
        Err(_) => Err(rpc(INTERNAL_ERROR, "request cancelled")),
    }
}

/// The result as a value, parsing one kept as text.
fn parsed(answer: Answer) -> Result<Value, RpcError> {
    answer
        .into_value()
        .map_err(|e| rpc(INTERNAL_ERROR, &e.to_string()))
}

/// What happens when a forwarded `tools/call` is answered: only a JSON-RPC
/// error says the call did not happen, so only then does its quota go back (a
/// lost connection may have lost only the answer: fail closed); the audit
/// record gets the outcome and the latency.
fn call_done(
    gateway: Arc<Gateway>,
    taken: Grant,
    record: Option<Record>,
    received: Instant,
) -> OnDone {
    // Durable before the call is forwarded (it is, once this returns).
    let record = record.map(|r| gateway.audit.intend(r));
    Box::new(move |result: &Result<Answer, CallError>| {
        if matches!(result, Err(CallError::Rpc(_))) {
            gateway.store.release(&taken);
        }
        if let Some(mut record) = record {
            record.outcome = match result {
                Ok(_) => Outcome::Ok,
                Err(CallError::Rpc(_)) => Outcome::Error,
                Err(_) => Outcome::NoResponse,
            };
            record.latency_ms = Some(received.elapsed().as_secs_f64() * 1e3);
            gateway.audit.record(record);
        }
    })
}

/// Removes the 2026-07-28 envelope keys from `_meta` (the gateway speaks to
/// servers in its own session), keeping everything else (`progressToken`).
fn strip_envelope(params: &mut Value) {
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            if let Value::Object(p) = params {
                p.remove("_meta");
            }
        }
    }
}

struct AbortOnDrop {
    handle: futures_util::future::AbortHandle,
    gateway: Arc<Gateway>,
    key: (String, String),
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.handle.abort();
        self.gateway
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.key);
    }
}

/// The client side of one forwarded request.
pub(crate) struct ClientLink {
    gateway: std::sync::Weak<Gateway>,
    /// The client's session; a server request its declared capabilities do
    /// not cover is refused here.
    session: Arc<Session>,
    tx: Arc<Outbox>,
}

/// What a server sends about one forwarded request (its own requests,
/// progress, log messages), on its way to the client: a queue and a wake-up,
/// lighter than a channel for the common request that has none.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<std::collections::VecDeque<Value>>,
    ready: tokio::sync::Notify,
    /// Set once nobody reads any more (the request is over).
    closed: std::sync::atomic::AtomicBool,
}

impl Outbox {
    /// Queues a message; false once the request is over.
    fn send(&self, message: Value) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.queue.lock().expect("outbox lock").push_back(message);
        self.ready.notify_one();
        true
    }

    fn try_recv(&self) -> Option<Value> {
        self.queue.lock().expect("outbox lock").pop_front()
    }

    /// The next message. (A send between the check and the wait leaves a
    /// permit in `ready`, so none is missed.)
    async fn recv(&self) -> Value {
        loop {
            if let Some(message) = self.try_recv() {
                return message;
            }
            self.ready.notified().await;
        }
    }
}

/// The reading end of an [`Outbox`]: dropping it closes the box.
struct OutboxRx(Arc<Outbox>);

impl Drop for OutboxRx {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
    }
}

impl Downstream for ClientLink {
    fn request(&self, method: String, params: Option<Value>) -> BoxFuture<Result<Value, RpcError>> {
        let Some(gateway) = self.gateway.upgrade() else {
            return Box::pin(async { Err(rpc(INTERNAL_ERROR, "gateway shutting down")) });
        };
        let needs = match method.as_str() {
            "sampling/createMessage" => Some("sampling"),
            "elicitation/create" => Some("elicitation"),
            "roots/list" => Some("roots"),
            _ => None,
        };
        if let Some(capability) = needs.filter(|c| self.session.caps.get(*c).is_none()) {
            return Box::pin(async move {
                Err(rpc(
                    METHOD_NOT_FOUND,
                    &format!("the client does not support {capability} ({method})"),
                ))
            });
        }
        let tx = self.tx.clone();
        ask_client(&gateway, &self.session.id, method, params, move |m| {
            tx.send(m)
        })
    }

    fn notify(&self, method: String, params: Option<Value>) {
        let mut message = json!({"jsonrpc": "2.0", "method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        self.tx.send(message);
    }

    fn session(&self) -> &str {
        &self.session.id
    }
}

/// Sends a server's request to a client session (with `send`) under an id
/// of the gateway's own, and waits for the client's answer to it.
fn ask_client(
    gateway: &Arc<Gateway>,
    session: &str,
    method: String,
    params: Option<Value>,
    send: impl FnOnce(Value) -> bool,
) -> BoxFuture<Result<Value, RpcError>> {
    let id = format!(
        "toolgate-{}",
        gateway.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let (done, wait) = oneshot::channel();
    let key = (session.to_string(), Value::String(id.clone()).to_string());
    gateway
        .waiting
        .lock()
        .expect("waiting lock")
        .insert(key.clone(), done);
    let mut message = json!({"jsonrpc": "2.0", "id": id, "method": method});
    if let Some(params) = params {
        message["params"] = params;
    }
    let sent = send(message);
    let gateway = gateway.clone();
    Box::pin(async move {
        if !sent {
            gateway.waiting.lock().expect("waiting lock").remove(&key);
            return Err(rpc(INTERNAL_ERROR, "the client is gone"));
        }
        match tokio::time::timeout(Duration::from_secs(300), wait).await {
            Ok(Ok(answer)) => answer,
            _ => {
                gateway.waiting.lock().expect("waiting lock").remove(&key);
                Err(rpc(INTERNAL_ERROR, "the client did not answer"))
            }
        }
    })
}

/// The client session that owns a per-session server instance: what the
/// server asks outside any call (`roots/list` after it starts, or after the
/// client's `notifications/roots/list_changed`) goes to the session's GET
/// stream.
struct SessionLink {
    gateway: std::sync::Weak<Gateway>,
    session: String,
}

impl Downstream for SessionLink {
    fn request(&self, method: String, params: Option<Value>) -> BoxFuture<Result<Value, RpcError>> {
        let Some(gateway) = self.gateway.upgrade() else {
            return Box::pin(async { Err(rpc(INTERNAL_ERROR, "gateway shutting down")) });
        };
        let (to, session) = (gateway.clone(), self.session.clone());
        ask_client(&gateway, &self.session, method, params, move |m| {
            to.send_to_session(&session, &m)
        })
    }

    fn notify(&self, method: String, params: Option<Value>) {
        if let Some(gateway) = self.gateway.upgrade() {
            let mut message = json!({"jsonrpc": "2.0", "method": method});
            if let Some(params) = params {
                message["params"] = params;
            }
            gateway.send_to_session(&self.session, &message);
        }
    }

    fn session(&self) -> &str {
        &self.session
    }

    fn reachable(&self) -> bool {
        self.gateway.upgrade().is_some_and(|g| {
            g.streams
                .lock()
                .expect("streams lock")
                .get(&self.session)
                .is_some_and(|s| !s.senders.is_empty())
        })
    }
}

/// The JSON object of a `_meta`, if any.
pub fn meta_of(params: &Value) -> Option<&Map<String, Value>> {
    params.get("_meta")?.as_object()
}

/// What a held call needs to go ahead once approved.
struct Held {
    key: String,
    new: NewRequest,
    approval: toolgate_policy::Approval,
    plan: toolgate_policy::Plan,
    ask_client: bool,
    tool: String,
    arguments: Value,
    ctx: Context,
    received: Instant,
}

/// A refusal-like tool result (`isError`) with the facts for programs.
fn held_result(text: String, facts: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "structuredContent": {"toolgate": facts},
    })
}

fn rfc3339(ms: u64) -> String {
    toolgate_gateway::clock::rfc3339(ms)
}

impl Gateway {
    /// A call a `require_approval` rule holds: run at once if an approval for
    /// the identical call is waiting; else ask the client's user (elicitation)
    /// or wait for an approver for the hold time, then run it, refuse it, or
    /// answer that approval is pending.
    #[allow(clippy::too_many_arguments)]
    async fn held_call(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        server: usize,
        original: &str,
        name: &str,
        params: Value,
        arguments: Value,
        decision: Decision,
        received: Instant,
    ) -> Reply {
        let Decision::ApprovalRequired {
            rule,
            reason,
            approval,
            plan,
        } = decision
        else {
            unreachable!("only held calls come here")
        };
        let server_name = self.servers[server].name.clone();
        let key = call_key(&ctx.caller.grant.name, Some(&server_name), name, &arguments);
        let new = NewRequest {
            grant: ctx.caller.grant.name.clone(),
            server: Some(server_name),
            tool: name.to_string(),
            arguments: arguments.clone(),
            reason: reason.clone(),
            rule: rule.to_string(),
            expires_in_ms: approval.expires_ms,
        };
        let ask_client = approval.via_client
            && ctx.era == Era::Handshake
            && ctx.session.caps.get("elicitation").is_some();
        // 2026-07-28: no server-to-client requests; the question goes back as
        // an input-required result, and the answer comes with the retry.
        if approval.via_client
            && ctx.era == Era::Stateless
            && ctx.session.caps.get("elicitation").is_some()
        {
            return self
                .input_required_round(ctx, id, server, original, params, new, received)
                .await;
        }
        if !ask_client && !approval.via_admin {
            let text = format!("toolgate held back this call to \"{name}\": {reason}; this client cannot be asked (it does not support elicitation) and the rule allows no other approvers (rule {rule})");
            let facts = json!({"decision": "approval_required", "rule": rule.as_str(), "reason": reason, "tool": name});
            self.audit_approval(
                ctx,
                name,
                &arguments,
                "approval_required",
                rule.as_str(),
                Some(text.clone()),
                received,
                new.server.as_deref(),
            );
            return Reply::Json(self.answer(ctx, id, "tools/call", Ok(held_result(text, facts))));
        }
        let held = Held {
            key,
            new,
            approval,
            plan,
            ask_client,
            tool: name.to_string(),
            arguments,
            ctx: ctx.clone(),
            received,
        };
        let gateway = self.clone();
        let gate: Gate =
            Box::new(move |link| Box::pin(async move { gateway.decide_held(link, held).await }));
        let mut upstream_params = params;
        upstream_params["name"] = Value::String(original.to_string());
        self.forward_gated(
            ctx,
            id,
            server,
            "tools/call",
            upstream_params,
            None,
            Some(gate),
        )
        .await
    }

    async fn decide_held(self: Arc<Self>, link: Arc<ClientLink>, held: Held) -> GateOutcome {
        let Held {
            key,
            new,
            approval,
            plan,
            ask_client,
            tool,
            arguments,
            ctx,
            received,
        } = held;
        let now = self.clock.now_ms();
        let unavailable = |e: toolgate_approvals::ApprovalError| {
            let text = format!("toolgate held back this call to \"{tool}\": {e}; it did not run");
            GateOutcome::Answer(held_result(
                text,
                json!({"decision": "state_unavailable", "reason": e.to_string(), "tool": tool}),
            ))
        };
        // An approval given earlier for this very call (a retry).
        let mut approved = match self.approvals.consume(&key, now) {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        };
        if approved.is_none() {
            let request = match self.open_request(&ctx, &new, now, received) {
                Ok(r) => r,
                Err(e) => return unavailable(e),
            };
            let decided = if ask_client {
                self.ask_client(&link, &request, &new).await
            } else {
                None
            };
            let request = match decided {
                Some(approve) => match decide_by_client_user(
                    &*self.approvals,
                    &*self.approval_events,
                    &request,
                    approve,
                    &new.grant,
                    self.clock.now_ms(),
                ) {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                },
                None if approval.via_admin => match self.hold(&request, approval.hold_ms).await {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                },
                None => request,
            };
            match &request.status {
                Status::Approved(_) => match self.approvals.consume(&key, self.clock.now_ms()) {
                    Ok(found) => approved = found,
                    Err(e) => return unavailable(e),
                },
                Status::Denied(d) => {
                    let text = approval_denied_text(&tool, &request.id, d);
                    self.audit_approval(
                        &ctx,
                        &tool,
                        &arguments,
                        "approval_denied",
                        &new.rule,
                        Some(text.clone()),
                        received,
                        new.server.as_deref(),
                    );
                    return GateOutcome::Answer(held_result(
                        text,
                        json!({"decision": "approval_denied", "approval_id": request.id, "by": d.by, "via": d.via.as_str(), "reason": d.reason, "tool": tool}),
                    ));
                }
                _ => {}
            }
            if approved.is_none() {
                let text = approval_pending_text(&tool, &new.reason, &request);
                self.audit_approval(
                    &ctx,
                    &tool,
                    &arguments,
                    "approval_pending",
                    &new.rule,
                    Some(text.clone()),
                    received,
                    new.server.as_deref(),
                );
                return GateOutcome::Answer(held_result(
                    text,
                    json!({"decision": "approval_pending", "approval_id": request.id, "expires_at": rfc3339(request.expires_ms), "reason": new.reason, "rule": new.rule, "tool": tool}),
                ));
            }
        }
        let approved = approved.expect("checked above");
        // Approved: the call runs now, and only now takes its quota.
        let draws = plan.draws.clone();
        let result = if draws.is_empty() {
            Ok(Default::default())
        } else {
            self.store.acquire_async(draws, self.clock.now_ms()).await
        };
        let decision = plan.conclude(result);
        let Decision::Allow { grant: taken, .. } = &decision else {
            self.audit_refusal(
                &ctx,
                &tool,
                &decision,
                &arguments,
                received,
                new.server.as_deref(),
            );
            let answer = refusal(&Value::Null, &tool, &decision, ctx.era).expect("not an allow");
            return GateOutcome::Answer(answer["result"].clone());
        };
        let taken = taken.clone();
        let mut record = self.record(
            &ctx,
            &tool,
            &decision,
            &arguments,
            received,
            new.server.as_deref(),
        );
        if let Some(record) = &mut record {
            record.reason = Some(match &approved.status {
                Status::Used { decided, .. } => format!(
                    "approved by {} via {} (approval request {})",
                    decided.by,
                    decided.via.as_str(),
                    approved.id
                ),
                _ => format!("approval request {}", approved.id),
            });
        }
        GateOutcome::Proceed(Some(call_done(self.clone(), taken, record, received)))
    }

    /// Asks the client's user through elicitation; `Some(true)` accept,
    /// `Some(false)` decline or cancel, `None` when the client could not be asked.
    async fn ask_client(
        &self,
        link: &Arc<ClientLink>,
        request: &ApprovalRequest,
        new: &NewRequest,
    ) -> Option<bool> {
        let params = approval_question(new, request);
        match link
            .request("elicitation/create".into(), Some(params))
            .await
        {
            Ok(result) => Some(result.get("action").and_then(Value::as_str) == Some("accept")),
            Err(_) => None,
        }
    }

    /// Waits up to `hold_ms` for an approver's decision.
    async fn hold(
        &self,
        request: &ApprovalRequest,
        hold_ms: u64,
    ) -> Result<ApprovalRequest, toolgate_approvals::ApprovalError> {
        let deadline = Instant::now() + Duration::from_millis(hold_ms);
        let mut current = request.clone();
        while current.status == Status::Pending && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(r) = self.approvals.get(&request.id)? {
                current = r;
            }
        }
        Ok(current)
    }

    /// The live approval request for a held call, or a new one: a new
    /// request is announced (webhook) and put in the audit trail.
    fn open_request(
        &self,
        ctx: &Context,
        new: &NewRequest,
        now: u64,
        received: Instant,
    ) -> Result<ApprovalRequest, toolgate_approvals::ApprovalError> {
        let request = self.approvals.request(new, now)?;
        if request.created_ms == now && request.status == Status::Pending {
            self.approval_events.requested(&request);
            self.audit_approval(
                ctx,
                &new.tool,
                &new.arguments,
                "approval_requested",
                &new.rule,
                Some(format!(
                    "approval request {} (expires {})",
                    request.id,
                    rfc3339(request.expires_ms)
                )),
                received,
                new.server.as_deref(),
            );
        }
        Ok(request)
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_approval(
        &self,
        ctx: &Context,
        tool: &str,
        arguments: &Value,
        kind: &'static str,
        rule: &str,
        reason: Option<String>,
        received: Instant,
        server: Option<&str>,
    ) {
        if let Some(record) = self.call_record(ctx, tool, arguments, received, server) {
            self.audit.record(Record {
                decision: kind,
                rule: rule.to_string(),
                reason,
                ..record
            });
        }
    }
}

/// Puts approval decisions made outside the gateway (admin API, webhook) in
/// the audit trail: who decided, how, when.
pub struct AuditApprovals(pub AuditSink);

impl ApprovalEvents for AuditApprovals {
    fn requested(&self, _: &ApprovalRequest) {}

    fn decided(&self, request: &ApprovalRequest) {
        if !self.0.enabled() {
            return;
        }
        let (kind, decided) = match &request.status {
            Status::Approved(d) => ("approved", d),
            Status::Denied(d) => ("approval_denied", d),
            _ => return,
        };
        let reason = format!(
            "approval request {} {} by {} via {}{}",
            request.id,
            if kind == "approved" {
                "approved"
            } else {
                "denied"
            },
            decided.by,
            decided.via.as_str(),
            decided
                .reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        self.0.record(Record {
            time: decided.at_ms,
            grant: request.grant.clone(),
            session: String::new(),
            server: request.server.clone(),
            tool: request.tool.clone(),
            decision: kind,
            rule: request.rule.clone(),
            reason: Some(reason),
            counters: Vec::new(),
            decision_us: 0.0,
            latency_ms: None,
            outcome: Outcome::Refused,
            args_sha256: args_sha256(&request.arguments),
            args: None,
            trace: None,
            intent: None,
        });
    }
}

impl Gateway {
    /// The 2026-07-28 way to ask the client's user: the first call gets an
    /// input-required result carrying the elicitation; the retry carries the
    /// answer (and the approval request's id in `requestState`). The answer
    /// decides only the request of this very call.
    #[allow(clippy::too_many_arguments)]
    async fn input_required_round(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        server: usize,
        original: &str,
        mut params: Value,
        new: NewRequest,
        received: Instant,
    ) -> Reply {
        let now = self.clock.now_ms();
        let key = call_key(&new.grant, new.server.as_deref(), &new.tool, &new.arguments);
        let state = params
            .get("requestState")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix(APPROVAL_STATE))
            .map(str::to_string);
        let action = params
            .pointer(&format!("/inputResponses/{APPROVAL_INPUT}/action"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let answer_result =
            |result: Value| Reply::Json(self.answer(ctx, id, "tools/call", Ok(result)));
        if let (Some(request_id), Some(action)) = (state, action) {
            let request = match self.approvals.get(&request_id) {
                Ok(Some(r)) if r.key == key => r,
                Ok(_) => {
                    return answer_result(held_result(
                        format!("toolgate: the approval answer does not belong to this call to \"{}\"; it did not run", new.tool),
                        json!({"decision": "approval_required", "tool": new.tool}),
                    ))
                }
                Err(e) => {
                    return answer_result(held_result(
                        format!("toolgate held back this call to \"{}\": {e}; it did not run", new.tool),
                        json!({"decision": "state_unavailable", "tool": new.tool}),
                    ))
                }
            };
            // Decided before (by an approver): that decision stands.
            let decided = decide_by_client_user(
                &*self.approvals,
                &*self.approval_events,
                &request,
                action == "accept",
                &new.grant,
                now,
            )
            .unwrap_or(request);
            if let Status::Denied(d) = &decided.status {
                let text = approval_denied_text(&new.tool, &decided.id, d);
                self.audit_approval(
                    ctx,
                    &new.tool,
                    &new.arguments,
                    "approval_denied",
                    &new.rule,
                    Some(text.clone()),
                    received,
                    new.server.as_deref(),
                );
                return answer_result(held_result(
                    text,
                    json!({"decision": "approval_denied", "approval_id": decided.id, "by": d.by, "via": d.via.as_str(), "tool": new.tool}),
                ));
            }
            // Run (or refuse) as for any decided request; our fields do not go upstream.
            if let Value::Object(p) = &mut params {
                p.remove("requestState");
                if let Some(Value::Object(responses)) = p.get_mut("inputResponses") {
                    responses.remove(APPROVAL_INPUT);
                    if responses.is_empty() {
                        p.remove("inputResponses");
                    }
                }
            }
            let held = Held {
                key,
                new: new.clone(),
                approval: toolgate_policy::Approval {
                    via_client: false,
                    via_admin: false,
                    hold_ms: 0,
                    expires_ms: 0,
                },
                plan: match self.plan_of(ctx, server, &new) {
                    Some(plan) => plan,
                    None => {
                        return answer_result(held_result(
                            format!(
                                "toolgate: the call to \"{}\" is no longer held for approval",
                                new.tool
                            ),
                            json!({"decision": "approval_required", "tool": new.tool}),
                        ))
                    }
                },
                ask_client: false,
                tool: new.tool.clone(),
                arguments: new.arguments.clone(),
                ctx: ctx.clone(),
                received,
            };
            let gateway = self.clone();
            let gate: Gate = Box::new(move |link| {
                Box::pin(async move { gateway.decide_held(link, held).await })
            });
            params["name"] = Value::String(original.to_string());
            return self
                .forward_gated(ctx, id, server, "tools/call", params, None, Some(gate))
                .await;
        }
        // First round: make (or find) the request and ask.
        let request = match self.open_request(ctx, &new, now, received) {
            Ok(r) => r,
            Err(e) => {
                return answer_result(held_result(
                    format!(
                        "toolgate held back this call to \"{}\": {e}; it did not run",
                        new.tool
                    ),
                    json!({"decision": "state_unavailable", "tool": new.tool}),
                ))
            }
        };
        Reply::Json(result_response(id, approval_input_required(&new, &request)))
    }

    /// The draws of a held call, planned again (for the retry of a round trip).
    fn plan_of(
        &self,
        ctx: &Context,
        server: usize,
        new: &NewRequest,
    ) -> Option<toolgate_policy::Plan> {
        let catalog = self.catalog();
        let entry = catalog.tool(&new.tool)?;
        let gateway_policy = self.gateway_policy(&ctx.caller);
        let server_policy = self.server_policy(server);
        let call = Call {
            tool: &new.tool,
            arguments: &new.arguments,
            arguments_text: None,
            grant: &ctx.caller.grant.name,
            session: &ctx.session.id,
        };
        let mut layers = Vec::with_capacity(2);
        if let Some(policy) = gateway_policy.as_deref() {
            layers.push(Layer {
                policy,
                call,
                key_prefix: "",
            });
        }
        if let Some(policy) = server_policy.as_deref() {
            layers.push(Layer {
                policy,
                call: Call {
                    tool: &entry.original,
                    ..call
                },
                key_prefix: &self.servers[server].key_prefix,
            });
        }
        match plan_layers(&layers) {
            Planned::Decided(Decision::ApprovalRequired { plan, .. }) => Some(plan),
            _ => None,
        }
    }
}
