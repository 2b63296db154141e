//! Messages from servers to sessions: the sessions' GET streams, the
//! `subscriptions/listen` streams of 2026-07-28 clients, resource
//! subscriptions, the streamed answers kept for resumption, and server
//! requests waiting for a client's answer.

use crate::gateway::rpc;
use crate::gateway::Gateway;
use crate::grants::Caller;
use crate::replay::EventLog;
use foldhash::HashMap;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use toolgate_jsonrpc::INTERNAL_ERROR;
use toolgate_upstream::{BoxFuture, RpcError};

/// A session's open GET streams, and the servers its grant may reach
/// (`None`: all), so that a server's notifications reach no one else.
#[derive(Default)]
pub(crate) struct SessionStreams {
    pub(crate) servers: Option<Vec<String>>,
    pub(crate) senders: Vec<mpsc::UnboundedSender<Value>>,
}

/// What goes from servers to sessions, each map under its own lock.
#[derive(Default)]
pub(crate) struct Streams {
    /// Open GET streams, by session id.
    pub(crate) by_session: Mutex<HashMap<String, SessionStreams>>,
    /// Resource subscriptions: uri → sessions.
    pub(crate) subscriptions: Mutex<HashMap<String, Vec<String>>>,
    /// Streamed answers that can be resumed, by stream id.
    pub(crate) logs: Mutex<HashMap<String, Arc<EventLog>>>,
    /// Server-to-client requests waiting for the client's answer, by (session, id).
    pub(crate) waiting: Mutex<HashMap<(String, String), ClientAnswer>>,
    /// The ids the gateway gives server-to-client requests.
    pub(crate) next_id: AtomicU64,
}

/// Where a client's answer to a server-to-client request goes.
pub(crate) type ClientAnswer = oneshot::Sender<Result<Value, RpcError>>;

/// The `_meta` key that ties a notification to its `subscriptions/listen`.
pub(crate) const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// What a 2026-07-28 `subscriptions/listen` asked for and the gateway
/// delivers: list changes of tools, prompts and resources, each tagged with
/// the subscription's id (the id of the listen request).
pub(crate) struct Listen {
    id: Value,
    tools: bool,
    prompts: bool,
    resources: bool,
}

impl Listen {
    pub(crate) fn of(id: &Value, params: &Value) -> Result<Listen, &'static str> {
        let filter = match params.get("notifications") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(filter)) => filter.clone(),
            Some(_) => return Err("params.notifications must be an object"),
        };
        let wants = |key: &str| filter.get(key).and_then(Value::as_bool) == Some(true);
        Ok(Listen {
            id: id.clone(),
            tools: wants("toolsListChanged"),
            prompts: wants("promptsListChanged"),
            resources: wants("resourcesListChanged"),
        })
    }

    /// The first message of the stream: the subscription's id and the part of
    /// the filter the gateway honours.
    pub(crate) fn acknowledgement(&self) -> Value {
        let mut honoured = serde_json::Map::new();
        for (key, wanted) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if wanted {
                honoured.insert(key.into(), Value::Bool(true));
            }
        }
        json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {SUBSCRIPTION_ID: self.id}, "notifications": honoured},
        })
    }

    /// A message as the stream carries it; `None` for what was not asked for.
    pub(crate) fn deliver(&self, mut message: Value) -> Option<Value> {
        let wanted = match message.get("method").and_then(Value::as_str)? {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            _ => false,
        };
        if !wanted {
            return None;
        }
        let object = message.as_object_mut()?;
        let params = object.entry("params").or_insert_with(|| json!({}));
        if !params.is_object() {
            *params = json!({});
        }
        let meta = params
            .as_object_mut()?
            .entry("_meta")
            .or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        meta.as_object_mut()?
            .insert(SUBSCRIPTION_ID.into(), self.id.clone());
        Some(message)
    }
}

impl Gateway {
    /// A `subscriptions/listen` stream: it hears what a session's GET stream
    /// hears (list changes of the servers the grant may reach), until the
    /// client goes away.
    pub(crate) fn open_listen(&self, caller: &Caller) -> mpsc::UnboundedReceiver<Value> {
        let n = self.streams.next_id.fetch_add(1, Ordering::Relaxed);
        self.open_stream(caller, &format!("listen:{n}"))
    }

    pub(crate) fn broadcast_list_changed(&self) {
        self.broadcast(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
    }

    pub(crate) fn broadcast(&self, message: Value) {
        self.broadcast_from(None, message);
    }

    /// To every open stream; with `server`, only to sessions whose grant may
    /// reach that server.
    pub(crate) fn broadcast_from(&self, server: Option<&str>, message: Value) {
        let mut streams = self.streams.by_session.lock().expect("streams lock");
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
    pub(crate) fn send_to_session(&self, session: &str, message: &Value) -> bool {
        match self
            .streams
            .by_session
            .lock()
            .expect("streams lock")
            .get_mut(session)
        {
            Some(stream) => {
                stream.senders.retain(|s| s.send(message.clone()).is_ok());
                !stream.senders.is_empty()
            }
            None => false,
        }
    }

    /// Registers a GET stream for a session.
    pub fn open_stream(&self, caller: &Caller, session: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut streams = self.streams.by_session.lock().expect("streams lock");
        let stream = streams.entry(session.to_string()).or_default();
        stream.servers = caller.grant.servers.clone();
        stream.senders.push(tx);
        rx
    }

    /// The streamed answer a `Last-Event-ID` names, if this process has it and
    /// it belongs to the session.
    pub fn resumable(&self, session: &str, stream: &str) -> Option<Arc<EventLog>> {
        let log = self
            .streams
            .logs
            .lock()
            .expect("logs lock")
            .get(stream)
            .cloned()?;
        (log.session == session).then_some(log)
    }

    /// Ends every open event stream (at shutdown).
    pub(crate) fn end_streams(&self) {
        self.streams
            .by_session
            .lock()
            .expect("streams lock")
            .clear();
    }

    /// Ends a session's streams and subscriptions.
    pub(crate) fn end_session(&self, session: &str) {
        self.streams
            .by_session
            .lock()
            .expect("streams lock")
            .remove(session);
        for sessions in self
            .streams
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .values_mut()
        {
            sessions.retain(|s| s != session);
        }
    }

    /// A client's answer to a server-to-client request.
    pub fn client_response(&self, session: &str, message: &Value) {
        let id = message.get("id").map(Value::to_string).unwrap_or_default();
        let waiter = self
            .streams
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
}

/// Sends a server's request to a client session (with `send`) under an id
/// of the gateway's own, and waits for the client's answer to it.
pub(crate) fn ask_client(
    gateway: &Arc<Gateway>,
    session: &str,
    method: String,
    params: Option<Value>,
    send: impl FnOnce(Value) -> bool,
) -> BoxFuture<Result<Value, RpcError>> {
    let id = format!(
        "toolgate-{}",
        gateway.streams.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let (done, wait) = oneshot::channel();
    let key = (session.to_string(), Value::String(id.clone()).to_string());
    gateway
        .streams
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
        let forget = || {
            gateway
                .streams
                .waiting
                .lock()
                .expect("waiting lock")
                .remove(&key);
        };
        if !sent {
            forget();
            return Err(rpc(INTERNAL_ERROR, "the client is gone"));
        }
        match tokio::time::timeout(Duration::from_secs(300), wait).await {
            Ok(Ok(answer)) => answer,
            _ => {
                forget();
                Err(rpc(INTERNAL_ERROR, "the client did not answer"))
            }
        }
    })
}
