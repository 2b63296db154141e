//! The upstream servers: their connections, own policies and health, the
//! events they report (ready, down, notifications), and fetching their lists
//! into the catalogue.

use crate::catalog::{Catalog, ServerLists};
use crate::gateway::Gateway;
use crate::grants::Caller;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_audit::LogLevel;
use toolgate_call::answer::Era;
use toolgate_policy::Policy;
use toolgate_upstream::{Answer, CallError, Downstream, ServerInfo, UpstreamEvent, UpstreamSpec};

pub(crate) struct Server {
    pub(crate) name: String,
    /// The server's own policy (swapped on reload).
    pub(crate) policy: RwLock<Option<Arc<Policy>>>,
    /// `server name` + U+001E: keeps this server's counters apart.
    pub(crate) key_prefix: String,
    pub(crate) upstream: AnyUpstream,
    /// `Some` for per-session servers: how to start another instance.
    pub(crate) per_session: Option<UpstreamSpec>,
    /// For a server that speaks both generations: its stateless link, which
    /// serves the 2026-07-28 clients (see `twins`).
    pub(crate) twin: RwLock<Option<AnyUpstream>>,
    /// Whether the server was asked if it speaks 2026-07-28 (asked once).
    pub(crate) probed: std::sync::atomic::AtomicBool,
}

/// What the router needs of an upstream server: implemented by
/// `toolgate_upstream::Upstream`, and by fakes in tests.
pub(crate) trait Upstream: Clone + Send + Sync + 'static {
    /// The server's initialize result while connected, `None` otherwise.
    fn info(&self) -> Option<Arc<ServerInfo>>;
    /// Connected and spoken to statelessly (2026-07-28).
    fn is_stateless(&self) -> bool;
    /// Waits until the server is ready (or `timeout` passes); true when ready.
    fn wait_ready(&self, timeout: Duration) -> impl Future<Output = bool> + Send;
    /// A request, with the answer as the server sent it when that is cheaper.
    fn request_answer(
        &self,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> impl Future<Output = Result<Answer, CallError>> + Send;
    /// A request, with the answer parsed.
    fn request(
        &self,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> impl Future<Output = Result<Value, CallError>> + Send {
        async move {
            self.request_answer(method, params, downstream)
                .await?
                .into_value()
        }
    }
    fn notify(&self, method: &str, params: Option<Value>) -> impl Future<Output = ()> + Send;
    /// Stops the connection, waiting up to `grace`.
    fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + Send;
    /// A second, stateless link to a server spoken to with the handshake
    /// that also speaks 2026-07-28 (asked once); `None` for any other.
    fn stateless_twin(
        &self,
        _events: mpsc::UnboundedSender<UpstreamEvent>,
        _timeout: Duration,
    ) -> impl Future<Output = Option<Self>> + Send {
        async { None }
    }
}

impl Upstream for toolgate_upstream::Upstream {
    fn info(&self) -> Option<Arc<ServerInfo>> {
        toolgate_upstream::Upstream::info(self)
    }
    fn is_stateless(&self) -> bool {
        toolgate_upstream::Upstream::is_stateless(self)
    }
    fn wait_ready(&self, timeout: Duration) -> impl Future<Output = bool> + Send {
        toolgate_upstream::Upstream::wait_ready(self, timeout)
    }
    fn request_answer(
        &self,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> impl Future<Output = Result<Answer, CallError>> + Send {
        toolgate_upstream::Upstream::request_answer(self, method, params, downstream)
    }
    fn notify(&self, method: &str, params: Option<Value>) -> impl Future<Output = ()> + Send {
        toolgate_upstream::Upstream::notify(self, method, params)
    }
    fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + Send {
        toolgate_upstream::Upstream::shutdown(self, grace)
    }
    fn stateless_twin(
        &self,
        events: mpsc::UnboundedSender<UpstreamEvent>,
        timeout: Duration,
    ) -> impl Future<Output = Option<Self>> + Send {
        toolgate_upstream::Upstream::stateless_twin(self, events, timeout)
    }
}

/// The upstream a server is reached through, chosen when it starts: an enum
/// rather than a trait object, so that a call costs no allocation and no
/// indirect call; tests add their fakes as a variant.
#[derive(Clone)]
pub(crate) enum AnyUpstream {
    Real(toolgate_upstream::Upstream),
    #[cfg(test)]
    Fake(fake::FakeServer),
}

macro_rules! each {
    ($self:ident, $u:ident => $e:expr) => {
        match $self {
            AnyUpstream::Real($u) => $e,
            #[cfg(test)]
            AnyUpstream::Fake($u) => $e,
        }
    };
}

impl Upstream for AnyUpstream {
    fn info(&self) -> Option<Arc<ServerInfo>> {
        each!(self, u => u.info())
    }
    fn is_stateless(&self) -> bool {
        each!(self, u => u.is_stateless())
    }
    async fn wait_ready(&self, timeout: Duration) -> bool {
        each!(self, u => u.wait_ready(timeout).await)
    }
    async fn request_answer(
        &self,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> Result<Answer, CallError> {
        each!(self, u => u.request_answer(method, params, downstream).await)
    }
    async fn notify(&self, method: &str, params: Option<Value>) {
        each!(self, u => u.notify(method, params).await)
    }
    async fn shutdown(&self, grace: Duration) {
        each!(self, u => u.shutdown(grace).await)
    }
    async fn stateless_twin(
        &self,
        events: mpsc::UnboundedSender<UpstreamEvent>,
        timeout: Duration,
    ) -> Option<Self> {
        match self {
            AnyUpstream::Real(u) => u
                .stateless_twin(events, timeout)
                .await
                .map(AnyUpstream::Real),
            #[cfg(test)]
            AnyUpstream::Fake(u) => u
                .stateless_twin(events, timeout)
                .await
                .map(AnyUpstream::Fake),
        }
    }
}

#[cfg(test)]
pub(crate) mod fake;

impl Gateway {
    /// Each server, and whether it is connected now (for `toolgate_upstream_up`).
    pub fn upstreams_up(&self) -> Vec<(String, bool)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.upstream.info().is_some()))
            .collect()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.lists.merged.read().expect("catalog lock").clone()
    }

    /// The catalogue clients of `era` see: for 2026-07-28 clients, the
    /// stateless lists of the servers that speak both generations.
    pub(crate) fn catalog_for(&self, era: Era) -> Arc<Catalog> {
        match era {
            Era::Handshake => self.catalog(),
            Era::Stateless => self.lists.stateless.read().expect("catalog lock").clone(),
        }
    }

    /// Each server's name and whether it is connected now, in config order
    /// (the index of a catalogue entry's `server`).
    pub fn server_status(&self) -> Vec<(String, bool)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.upstream.info().is_some()))
            .collect()
    }

    /// Follows upstream events: refreshes lists and tells clients.
    pub(crate) async fn watch(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<UpstreamEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                UpstreamEvent::Ready { server, .. } => {
                    self.audit
                        .log(LogLevel::Info, &format!("server {server:?} is ready"));
                    // Lists held now were fetched on this connection (a Down
                    // clears them): start-up fetched them already, so its
                    // servers' Ready events fetch nothing again. Clients hear
                    // of it only when what they may list changed.
                    // The first Ready after start-up asks the server about
                    // 2026-07-28 (up to the probe's timeout): that runs on a
                    // task of its own, so other servers' events are not held
                    // up behind it.
                    if let Some(i) = self.index_of(&server) {
                        let held = self.lists.held.lock().expect("lists lock")[i].is_some();
                        let probed = self.servers[i].probed.load(Ordering::Acquire);
                        if !held && probed {
                            if self.refresh(i).await {
                                self.broadcast_list_changed();
                            }
                        } else if !held {
                            let gateway = self.clone();
                            tokio::spawn(async move {
                                gateway.probe_twin(i).await;
                                if gateway.refresh(i).await {
                                    gateway.broadcast_list_changed();
                                }
                            });
                        }
                    }
                }
                UpstreamEvent::Down { server, reason } => {
                    self.audit.log(
                        LogLevel::Warn,
                        &format!("server {server:?} is down: {reason}"),
                    );
                    if let Some(i) = self.index_of(&server) {
                        self.lists.held.lock().expect("lists lock")[i] = None;
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
                        // A stateless server says so on its listen stream,
                        // opened once it is ready: passed on whatever changed
                        // (the lists a client may see can be the same).
                        if let Some(i) = self.index_of(&server) {
                            let listened = self.servers[i].upstream.is_stateless();
                            if self.refresh(i).await || listened {
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
                            .streams
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

    pub(crate) fn index_of(&self, server: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == server)
    }

    /// Fetches one server's lists again and rebuilds the catalogue; true
    /// when they differ from the ones held before.
    pub(crate) async fn refresh(&self, index: usize) -> bool {
        let upstream = &self.servers[index].upstream;
        let Some(lists) = self.fetch_lists(upstream).await else {
            return false;
        };
        // A server that speaks both generations: its stateless lists too,
        // under the same pins (a tool listed only there is checked as well).
        let twin = match self.twin_of(index) {
            Some(twin) => self.fetch_lists(&twin).await,
            None => None,
        };
        let mut tools = lists.tools.clone();
        if let Some(twin) = &twin {
            let names: std::collections::HashSet<&Value> =
                lists.tools.iter().filter_map(|t| t.get("name")).collect();
            tools.extend(
                twin.tools
                    .iter()
                    .filter(|t| t.get("name").is_none_or(|n| !names.contains(n)))
                    .cloned(),
            );
        }
        self.check_pins(index, &tools);
        if upstream.info().is_none() {
            // It went down while being listed: its Down cleared what was
            // held, and these lists must not outlive that connection.
            return false;
        }
        let changed = {
            let mut all = self.lists.held.lock().expect("lists lock");
            let mut twins = self.lists.twins.lock().expect("lists lock");
            let changed = all[index].as_ref() != Some(&lists) || twins[index] != twin;
            all[index] = Some(lists);
            twins[index] = twin;
            changed
        };
        self.rebuild();
        changed
    }

    /// One server's lists, as far as its capabilities say it has them;
    /// `None` while it is not connected.
    async fn fetch_lists(&self, upstream: &AnyUpstream) -> Option<ServerLists> {
        let info = upstream.info()?;
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
        Some(lists)
    }

    pub(crate) async fn list_all(
        &self,
        upstream: &AnyUpstream,
        method: &str,
        field: &str,
    ) -> Vec<Value> {
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

    pub(crate) fn rebuild(&self) {
        let lists = self.lists.held.lock().expect("lists lock").clone();
        let twins = self.lists.twins.lock().expect("lists lock").clone();
        let catalog = Catalog::build(&self.lists.naming, &lists, &self.lists.separator);
        for conflict in &catalog.conflicts {
            self.audit.log(LogLevel::Warn, conflict);
        }
        let catalog = Arc::new(catalog);
        // 2026-07-28 clients: each server's stateless lists where it has them.
        let stateless = if twins.iter().all(Option::is_none) {
            catalog.clone()
        } else {
            let lists: Vec<Option<ServerLists>> = lists
                .into_iter()
                .zip(twins)
                .map(|(held, twin)| twin.or(held))
                .collect();
            let stateless = Catalog::build(&self.lists.naming, &lists, &self.lists.separator);
            for conflict in &stateless.conflicts {
                if !catalog.conflicts.contains(conflict) {
                    self.audit.log(LogLevel::Warn, conflict);
                }
            }
            Arc::new(stateless)
        };
        *self.lists.merged.write().expect("catalog lock") = catalog;
        *self.lists.stateless.write().expect("catalog lock") = stateless;
    }

    pub(crate) fn reachable(&self, caller: &Caller) -> impl Iterator<Item = (usize, &Server)> + '_ {
        let allowed = caller.grant.servers.clone();
        self.servers
            .iter()
            .enumerate()
            .filter(move |(_, s)| allowed.as_ref().is_none_or(|a| a.contains(&s.name)))
    }

    pub(crate) fn may_reach(&self, caller: &Caller, server: usize) -> bool {
        caller
            .grant
            .servers
            .as_ref()
            .is_none_or(|a| a.contains(&self.servers[server].name))
    }

    pub(crate) fn server_policy(&self, server: usize) -> Option<Arc<Policy>> {
        self.servers[server]
            .policy
            .read()
            .expect("policy lock")
            .clone()
    }
}
