//! The transport-independent half of a connection: the table of requests in
//! flight, id and progress-token rewriting, cancellation, the initialize
//! handshake (or `server/discover` for a stateless server), and routing of what the server sends (answers, server-to-client
//! requests, notifications).

use crate::{Answer, CallError, Downstream, RpcError, ServerInfo, UpstreamEvent, UpstreamSpec};
use bytes::Bytes;
use serde_json::{json, Map, Value};
// foldhash (keyed per process): these maps are looked up on every call.
use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use toolgate_clock::monotonic_now;

/// A connection that stayed up this long gets its restart delay reset.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The restarts of a connection that lives again and again (a child
/// process, an SSE stream): a delay doubling from the spec's `initial` to
/// its `max`, back to `initial` after a life of [`STABLE_AFTER`] or more.
pub(crate) struct Restarts {
    delay: Duration,
    started: Instant,
}

impl Restarts {
    pub(crate) fn new(conn: &Conn) -> Restarts {
        Restarts {
            delay: conn.spec.backoff.initial,
            started: monotonic_now(),
        }
    }

    /// A life begins.
    pub(crate) fn begin(&mut self) {
        self.started = monotonic_now();
    }

    /// The life ended for `reason`: the connection goes down and waits its
    /// delay. False when shutdown came first.
    pub(crate) async fn ended(
        &mut self,
        conn: &Conn,
        reason: &str,
        shutdown: &mut watch::Receiver<Option<Duration>>,
    ) -> bool {
        conn.go_down(reason);
        if self.started.elapsed() >= STABLE_AFTER.max(self.delay) {
            self.delay = conn.spec.backoff.initial;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {}
            _ = shutdown.changed() => return false,
        }
        self.delay = (self.delay * 2).min(conn.spec.backoff.max);
        true
    }
}

/// The JSON-RPC code and message for a server-to-client request that cannot be
/// tied to one client session.
pub(crate) const AMBIGUOUS_CODE: i64 = -32603;
pub(crate) const AMBIGUOUS_MESSAGE: &str =
    "cannot tell which client session this request belongs to; run this server per_session";

/// The least time `initialize` (or `server/discover`) is given, whatever
/// `request_timeout` says.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How messages reach the server on the current connection.
#[derive(Clone)]
pub(crate) enum Link {
    /// Lines for the stdio writer task.
    Stdio(mpsc::UnboundedSender<String>),
    Http(Arc<crate::http::HttpLink>),
    Legacy(Arc<crate::legacy::LegacyLink>),
}

struct Pending {
    tx: oneshot::Sender<Result<Answer, CallError>>,
    downstream: Option<Arc<dyn Downstream>>,
    /// (token sent upstream, the caller's original token)
    progress: Option<(String, Value)>,
}

#[derive(Default)]
struct Table {
    pending: HashMap<u64, Pending>,
    /// upstream progress token -> request id
    progress: HashMap<String, u64>,
    /// server-to-client requests being answered, by their id as JSON text
    serving: HashMap<String, tokio::task::AbortHandle>,
}

pub(crate) struct Conn {
    pub(crate) spec: UpstreamSpec,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    pub(crate) info: watch::Sender<Option<Arc<ServerInfo>>>,
    table: Mutex<Table>,
    next_id: AtomicU64,
    link: Mutex<Option<Link>>,
    /// `Some(grace)` once shutdown was asked for.
    pub(crate) shutdown: watch::Sender<Option<Duration>>,
    /// The client session a per-session instance belongs to: a request the
    /// server makes outside any call (`roots/list` after start-up or after
    /// `notifications/roots/list_changed`) goes there.
    pub(crate) owner: Option<Arc<dyn Downstream>>,
    /// Whether the server is ready and spoken to statelessly (read on every
    /// call, so kept beside `info` rather than read from it).
    pub(crate) stateless: std::sync::atomic::AtomicBool,
}

impl Conn {
    pub(crate) fn new(spec: UpstreamSpec, events: mpsc::UnboundedSender<UpstreamEvent>) -> Conn {
        Conn {
            spec,
            events,
            info: watch::channel(None).0,
            table: Mutex::default(),
            next_id: AtomicU64::new(1),
            link: Mutex::new(None),
            shutdown: watch::channel(None).0,
            owner: None,
            stateless: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.borrow().is_some()
    }

    pub(crate) fn set_link(&self, link: Option<Link>) {
        *self.link.lock().unwrap() = link;
    }

    fn link(&self) -> Option<Link> {
        self.link.lock().unwrap().clone()
    }

    pub(crate) fn event(&self, event: UpstreamEvent) {
        let _ = self.events.send(event);
    }

    /// The connection is gone: forget the link, fail every request in flight
    /// at once, abort the server-to-client requests being served, report Down.
    pub(crate) fn go_down(&self, reason: &str) {
        self.set_link(None);
        self.stateless.store(false, Ordering::Release);
        self.info.send_replace(None);
        self.fail_all(reason);
        self.event(UpstreamEvent::Down {
            server: self.spec.name.clone(),
            reason: reason.to_owned(),
        });
    }

    /// `result`'s value; or `None`, the connection down for the reason.
    pub(crate) fn or_go_down<T>(&self, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.go_down(&reason)).ok()
    }

    pub(crate) fn fail_all(&self, reason: &str) {
        let table = std::mem::take(&mut *self.table.lock().unwrap());
        for (_, p) in table.pending {
            let _ = p.tx.send(Err(CallError::Unavailable(reason.to_owned())));
        }
        for (_, h) in table.serving {
            h.abort();
        }
    }

    /// Sends one message on the current link; `origin` is the id of the
    /// request it is part of (HTTP routes the answer stream by it).
    pub(crate) fn send(self: &Arc<Self>, msg: Value, origin: Option<u64>) -> bool {
        self.send_text(msg.to_string(), origin)
    }

    /// [`Conn::send`] for a message already written as JSON text.
    fn send_text(self: &Arc<Self>, text: String, origin: Option<u64>) -> bool {
        match self.link() {
            Some(link) => {
                match link {
                    Link::Stdio(tx) => {
                        let _ = tx.send(text);
                    }
                    Link::Http(h) => {
                        crate::http::spawn_post(self.clone(), h, Bytes::from(text), origin)
                    }
                    Link::Legacy(l) => {
                        crate::legacy::spawn_post(self.clone(), l, Bytes::from(text), origin)
                    }
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn notify(self: &Arc<Self>, method: &str, params: Option<Value>) {
        let mut msg = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send(msg, None);
    }

    /// Sends a request and waits for its answer. `need_ready`: refuse unless
    /// the handshake is done (false for `initialize` and `server/discover`).
    /// To a stateless server the request goes with its envelope in `_meta`
    /// and its routing headers.
    pub(crate) async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
        need_ready: bool,
    ) -> Result<Answer, CallError> {
        if need_ready && self.info.borrow().is_none() {
            return Err(CallError::Unavailable(format!(
                "server {} is not connected",
                self.spec.name
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut params = params;
        let mut progress = None;
        if let Some(Value::Object(p)) = params.as_mut() {
            if let Some(Value::Object(meta)) = p.get_mut("_meta") {
                if let Some(orig) = meta.get("progressToken").cloned() {
                    let token = format!("toolgate-{id}");
                    meta.insert("progressToken".into(), Value::String(token.clone()));
                    progress = Some((token, orig));
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut t = self.table.lock().unwrap();
            if let Some((token, _)) = &progress {
                t.progress.insert(token.clone(), id);
            }
            t.pending.insert(
                id,
                Pending {
                    tx,
                    downstream,
                    progress,
                },
            );
        }
        let mut guard = CancelGuard {
            conn: self.clone(),
            id,
            reason: "the client cancelled the request",
            armed: method != "initialize",
        };
        let link = self.link();
        let route = match &link {
            Some(Link::Http(h)) if h.is_stateless() => {
                params = crate::modern::stamp(params);
                crate::modern::route(method, params.as_ref()).map(Box::new)
            }
            _ => None,
        };
        let text = request_text(id, method, params.as_ref());
        // Over HTTP the POST runs inside this future rather than in a task of
        // its own: one fewer hop between threads per call.
        let mut post = None;
        let sent = match link {
            Some(Link::Http(h)) => {
                let body = Bytes::from(text);
                let is_init = method == "initialize";
                post = Some(Box::pin(crate::http::post(
                    self.clone(),
                    h,
                    body,
                    is_init,
                    Some(id),
                    route,
                )));
                true
            }
            // Stdio messages are lines: serde_json writes no raw newline.
            _ => self.send_text(String::from_utf8(text).expect("JSON is UTF-8"), Some(id)),
        };
        if !sent {
            guard.armed = false;
            self.take(id);
            return Err(CallError::Unavailable(format!(
                "server {} is not connected",
                self.spec.name
            )));
        }
        // A server that is just starting (an interpreter, `npx`) may take a
        // while to answer `initialize`; later requests get `request_timeout`.
        let timeout = if !need_ready {
            self.spec.request_timeout.max(INIT_TIMEOUT)
        } else {
            self.spec.request_timeout
        };
        let mut rx = rx;
        let answer = async {
            match post {
                Some(mut post) => {
                    tokio::select! {
                        biased;
                        answer = &mut rx => answer,
                        () = &mut post => rx.await,
                    }
                }
                None => rx.await,
            }
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            Ok(Err(_)) => {
                guard.armed = false;
                Err(CallError::Unavailable("the connection closed".into()))
            }
            Err(_) => {
                guard.reason = "the request timed out";
                Err(CallError::Timeout(timeout))
            }
        }
    }

    fn take(&self, id: u64) -> Option<Pending> {
        let mut t = self.table.lock().unwrap();
        let p = t.pending.remove(&id)?;
        if let Some((token, _)) = &p.progress {
            t.progress.remove(token);
        }
        Some(p)
    }

    /// Resolves request `id` (if still in flight) with `result`.
    pub(crate) fn complete(&self, id: u64, result: Result<Value, CallError>) {
        if let Some(p) = self.take(id) {
            let _ = p.tx.send(result.map(Answer::Parsed));
        }
    }

    /// Resolves request `id` (if still in flight) with a result kept as text.
    pub(crate) fn complete_raw(&self, id: u64, result: Box<serde_json::value::RawValue>) {
        if let Some(p) = self.take(id) {
            let _ = p.tx.send(Ok(Answer::Raw(result)));
        }
    }

    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.table.lock().unwrap().pending.contains_key(&id)
    }

    /// The initialize handshake; on success the connection is Ready.
    pub(crate) async fn handshake(self: &Arc<Self>) -> Result<Arc<ServerInfo>, CallError> {
        let params = json!({
            "protocolVersion": crate::PROTOCOL_VERSION,
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let result = self
            .request("initialize", Some(params), None, false)
            .await?
            .into_value()?;
        let info = Arc::new(ServerInfo {
            protocol_version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            server_info: result.get("serverInfo").cloned().unwrap_or(json!({})),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        if let Some(Link::Http(h)) = self.link() {
            h.set_protocol(&info.protocol_version);
            // Over HTTP each message is its own POST: wait for this one, so no
            // request overtakes it (servers finish setting up on it).
            let body = Bytes::from(initialized.to_string());
            Box::pin(crate::http::post(self.clone(), h, body, false, None, None)).await;
        } else {
            self.send(initialized, None);
        }
        Ok(self.ready(info, false))
    }

    /// The connection is Ready with `info` (`stateless`: spoken to
    /// statelessly).
    fn ready(&self, info: Arc<ServerInfo>, stateless: bool) -> Arc<ServerInfo> {
        self.stateless.store(stateless, Ordering::Release);
        self.info.send_replace(Some(info.clone()));
        self.event(UpstreamEvent::Ready {
            server: self.spec.name.clone(),
            info: info.clone(),
        });
        info
    }

    /// `server/discover` to a server spoken to statelessly (the link is
    /// already stateless); on a result that lists the stateless version the
    /// connection is Ready.
    pub(crate) async fn discover(self: &Arc<Self>) -> Result<Arc<ServerInfo>, CallError> {
        let result = self
            .request("server/discover", None, None, false)
            .await?
            .into_value()?;
        let info = crate::modern::discovered(&result).ok_or_else(|| {
            CallError::Unavailable(format!(
                "the server refused the {} handshake, and its server/discover does not offer {}",
                crate::PROTOCOL_VERSION,
                crate::modern::STATELESS_VERSION
            ))
        })?;
        Ok(self.ready(Arc::new(info), true))
    }

    /// Routes one message from the server. `origin` is the request whose
    /// answer stream carried it, when the transport knows.
    pub(crate) fn dispatch(self: &Arc<Self>, msg: Value, origin: Option<u64>) {
        let Value::Object(m) = msg else {
            return;
        };
        // Taken apart in one pass (a lookup per member would hash each key).
        let (mut method, mut params, mut id, mut result, mut error) =
            (None, None, None, None, None);
        for (key, value) in m {
            match key.as_str() {
                "method" => method = Some(value),
                "params" => params = Some(value),
                "id" => id = Some(value),
                "result" => result = Some(value),
                "error" => error = Some(value),
                _ => {}
            }
        }
        let method = match method {
            Some(Value::String(method)) => Some(method),
            _ => None,
        };
        match (method, id) {
            (Some(method), Some(id)) => self.serve(id, method, params, origin),
            (Some(method), None) => self.notification(method, params, origin),
            (None, Some(id)) => {
                let Some(id) = id.as_u64() else { return };
                let result = if let Some(err) = error {
                    Err(CallError::Rpc(rpc_error(err)))
                } else {
                    Ok(result.unwrap_or(Value::Null))
                };
                self.complete(id, result);
            }
            (None, None) => {}
        }
    }

    fn downstream_of(&self, id: u64) -> Option<Option<Arc<dyn Downstream>>> {
        let t = self.table.lock().unwrap();
        t.pending.get(&id).map(|p| p.downstream.clone())
    }

    /// The Downstream that all requests in flight share, if they share one
    /// client session.
    fn shared_downstream(&self) -> Option<Arc<dyn Downstream>> {
        let t = self.table.lock().unwrap();
        let mut found: Option<Arc<dyn Downstream>> = None;
        for ds in t.pending.values().filter_map(|p| p.downstream.as_ref()) {
            match &found {
                None => found = Some(ds.clone()),
                Some(f) if f.session() == ds.session() => {}
                Some(_) => return None,
            }
        }
        found
    }

    fn serve(
        self: &Arc<Self>,
        id: Value,
        method: String,
        params: Option<Value>,
        origin: Option<u64>,
    ) {
        if method == "ping" {
            self.respond(id, Ok(json!({})));
            return;
        }
        let ds = match origin.and_then(|o| self.downstream_of(o)) {
            Some(ds) => ds,
            None => self.shared_downstream().or_else(|| self.owner.clone()),
        };
        let Some(ds) = ds else {
            self.respond(
                id,
                Err(RpcError {
                    code: AMBIGUOUS_CODE,
                    message: AMBIGUOUS_MESSAGE.into(),
                    data: None,
                }),
            );
            return;
        };
        let key = id.to_string();
        let conn = self.clone();
        let key2 = key.clone();
        let mut t = self.table.lock().unwrap();
        let task = tokio::spawn(async move {
            let result = ds.request(method, params).await;
            conn.table.lock().unwrap().serving.remove(&key2);
            conn.respond(id, result);
        });
        t.serving.insert(key, task.abort_handle());
    }

    fn respond(self: &Arc<Self>, id: Value, result: Result<Value, RpcError>) {
        let msg = match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err(e) => {
                let mut err = json!({"code": e.code, "message": e.message});
                if let Some(d) = e.data {
                    err["data"] = d;
                }
                json!({"jsonrpc": "2.0", "id": id, "error": err})
            }
        };
        self.send(msg, None);
    }

    fn notification(self: &Arc<Self>, method: String, params: Option<Value>, origin: Option<u64>) {
        match method.as_str() {
            "notifications/progress" => {
                let mut params = params;
                let Some(Value::Object(p)) = params.as_mut() else {
                    return;
                };
                let Some(token) = p.get("progressToken").and_then(Value::as_str) else {
                    return;
                };
                let target = {
                    let t = self.table.lock().unwrap();
                    t.progress
                        .get(token)
                        .and_then(|id| t.pending.get(id))
                        .and_then(|pe| {
                            Some((pe.downstream.clone()?, pe.progress.as_ref()?.1.clone()))
                        })
                };
                if let Some((ds, orig)) = target {
                    p.insert("progressToken".into(), orig);
                    ds.notify(method, params);
                }
            }
            "notifications/cancelled" => {
                let key = params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .map(Value::to_string);
                if let Some(key) = key {
                    if let Some(h) = self.table.lock().unwrap().serving.remove(&key) {
                        h.abort();
                    }
                }
            }
            _ => {
                let ds = origin.and_then(|o| self.downstream_of(o)).flatten();
                match ds {
                    Some(ds) if method == "notifications/message" => ds.notify(method, params),
                    _ => self.event(UpstreamEvent::Notification {
                        server: self.spec.name.clone(),
                        method,
                        params,
                    }),
                }
            }
        }
    }
}

pub(crate) fn rpc_error(err: Value) -> RpcError {
    let mut m = match err {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("message".into(), other);
            m
        }
    };
    RpcError {
        code: m.get("code").and_then(Value::as_i64).unwrap_or(-32603),
        message: match m.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        },
        data: m.remove("data"),
    }
}

/// Sends `notifications/cancelled` when a request's future is dropped (or
/// times out) before the answer came.
struct CancelGuard {
    conn: Arc<Conn>,
    id: u64,
    reason: &'static str,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed || self.conn.take(self.id).is_none() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.conn.notify(
            "notifications/cancelled",
            Some(json!({"requestId": self.id, "reason": self.reason})),
        );
    }
}

/// A JSON-RPC request as JSON text, written straight from its parts (no
/// intermediate object to build and walk on every call).
fn request_text(id: u64, method: &str, params: Option<&Value>) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(128);
    let _ = write!(out, "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":");
    serde_json::to_writer(&mut out, method).expect("a str serialises");
    if let Some(params) = params {
        out.extend_from_slice(b",\"params\":");
        serde_json::to_writer(&mut out, params).expect("a Value serialises");
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::request_text;
    use serde_json::{json, Value};

    #[test]
    fn a_request_text_is_the_request_as_json() {
        let params = json!({"name": "echo", "arguments": {"text": "a \"quoted\"\nline ✓"}});
        let text = request_text(7, "tools/call", Some(&params));
        let parsed: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            parsed,
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})
        );
        assert!(!text.contains(&b'\n'), "one line on stdio");
        let bare: Value = serde_json::from_slice(&request_text(1, "ping", None)).unwrap();
        assert_eq!(bare, json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    }
}
