//! A request on its way to a server: the client's side of it (what the
//! server asks or reports about it), the reply it turns into (JSON, or a
//! resumable stream), requests in flight that `notifications/cancelled`
//! stops, and calls parked while a 2026-07-28 client answers their server's
//! requests. Owns the in-flight and parked maps.

use crate::gateway::rpc;
use crate::gateway::Context;
use crate::gateway::Gateway;
use crate::gateway::Reply;
use crate::replay::{EventLog, KEEP};
use crate::rounds::Relayed;
use crate::session::{random_id, Session};
use crate::streams::ask_client;
use crate::upstreams::{AnyUpstream, Upstream};
use foldhash::HashMap;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_call::answer::Era;
use toolgate_jsonrpc::{
    args_sha256, error_response, result_response, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND,
};
use toolgate_upstream::{Answer, BoxFuture, CallError, Downstream, RpcError};

/// Runs when a forwarded request has its answer (audit, quota).
pub(crate) type OnDone = Box<dyn FnOnce(&Result<Answer, CallError>) + Send>;

/// Runs before a request is forwarded, with the client's side of it.
pub(crate) type Gate = Box<dyn FnOnce(Arc<ClientLink>) -> BoxFuture<GateOutcome> + Send>;

/// A forwarded request on its way: the upstream call (with its gate and
/// what to do when it is answered), abortable.
pub(crate) type CallTask = std::pin::Pin<
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
pub(crate) const PARK_TTL: Duration = Duration::from_secs(300);

/// Requests on their way, each map under its own lock.
#[derive(Default)]
pub(crate) struct Calls {
    /// Client requests in flight, by (session, id), so that
    /// `notifications/cancelled` can stop them.
    pub(crate) in_flight: Mutex<HashMap<(String, String), futures_util::future::AbortHandle>>,
    /// Calls of 2026-07-28 clients parked until the client answers their
    /// servers' requests, by the key in their `requestState`.
    pub(crate) parked: Mutex<HashMap<String, Parked>>,
    /// Sealed `requestState`s of stateless servers already taken.
    pub(crate) spent: crate::rounds::Spent,
}

/// A forwarded request whose server asked the client something: it waits
/// here, still running, for the client's retry with the answers.
pub(crate) struct Parked {
    pub(crate) grant: String,
    pub(crate) session: String,
    pub(crate) method: String,
    pub(crate) server: usize,
    pub(crate) task: CallTask,
    pub(crate) rx: OutboxRx,
    pub(crate) guard: AbortOnDrop,
    /// The ids of the server's requests that wait for the client's answers.
    pub(crate) pending: Vec<String>,
}

impl Parked {
    pub(crate) fn new(
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
pub(crate) fn is_request(message: &Value) -> bool {
    message.get("method").is_some() && message.get("id").is_some()
}

pub(crate) enum GateOutcome {
    /// Forward the request; run this when it is answered.
    Proceed(Option<OnDone>),
    /// Answer with this result instead.
    Answer(Value),
}

impl Gateway {
    /// Sends a request to a server on the client's behalf. Whatever the server
    /// sends about it before the answer (its own requests, progress) turns the
    /// reply into a stream.
    pub(crate) async fn forward(
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
    pub(crate) async fn forward_gated(
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
        let upstream = match self.upstream_for(server, &ctx.session.id, ctx.era).await {
            Ok(upstream) if ctx.era == Era::Stateless && upstream.is_stateless() => {
                pass_capabilities(&mut params, &ctx.session.caps);
                upstream
            }
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
        self.calls
            .in_flight
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

    /// What a sealed `requestState` of `tools/call` to `server` binds.
    pub(crate) fn relayed(&self, ctx: &Context, server: usize, params: &Value) -> Relayed {
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
    pub(crate) async fn drive(
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
                self.streams.logs.lock().expect("logs lock").insert(log.id.clone(), log.clone());
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
                    gateway.streams.logs.lock().expect("logs lock").remove(&writer.id);
                });
                Reply::Stream(log)
            }
            result = &mut task => {
                drop(guard);
                let result = flatten(result, &self.servers[server].name);
                // What the server sent just before its answer, read with it in
                // one go (a stateless server's stream, written at the end),
                // goes out first on a stream of its own.
                let mut queued = Vec::new();
                while let Some(message) = rx.0.try_recv() {
                    if !is_request(&message) {
                        queued.push(message);
                    }
                }
                if queued.is_empty() {
                    return self.reply(ctx, id, method, result);
                }
                let log = Arc::new(EventLog::new(random_id(), ctx.session.id.clone()));
                for message in queued {
                    log.push(message);
                }
                log.push(self.answer(ctx, id, method, result.and_then(parsed)));
                log.finish();
                self.streams.logs.lock().expect("logs lock").insert(log.id.clone(), log.clone());
                let gateway = self.clone();
                let key = log.id.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(KEEP).await;
                    gateway.streams.logs.lock().expect("logs lock").remove(&key);
                });
                Reply::Stream(log)
            }
        }
    }

    /// Parks a call whose server asked a 2026-07-28 client something, and
    /// returns the answer for the client: an input-required result with the
    /// server's requests (this one and any already queued) under their ids,
    /// and `requestState` naming the parked call. Notifications queued with
    /// them (progress, logging) are dropped: the client has no stream.
    pub(crate) fn park(self: &Arc<Self>, id: &Value, mut parked: Parked, first: Value) -> Value {
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
        self.calls
            .parked
            .lock()
            .expect("parked lock")
            .insert(token.clone(), parked);
        // Not retried in time: the call is dropped, which cancels it upstream.
        let gateway = Arc::downgrade(self);
        let key = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PARK_TTL).await;
            if let Some(gateway) = gateway.upgrade() {
                let expired = gateway
                    .calls
                    .parked
                    .lock()
                    .expect("parked lock")
                    .remove(&key);
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
    pub(crate) async fn resume(
        self: &Arc<Self>,
        ctx: &Context,
        id: &Value,
        method: &str,
        token: &str,
        params: &Value,
    ) -> Reply {
        let parked = {
            let mut parked = self.calls.parked.lock().expect("parked lock");
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
            let waiter = self
                .streams
                .waiting
                .lock()
                .expect("waiting lock")
                .remove(&key);
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

    /// `notifications/cancelled` from a client: stop the request.
    pub fn cancel(&self, session: &str, params: &Value) {
        let id = params
            .get("requestId")
            .map(Value::to_string)
            .unwrap_or_default();
        if let Some(handle) = self
            .calls
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&(session.to_string(), id))
        {
            handle.abort();
        }
    }
}

/// What happens to a stateless server's input-required answer.
pub(crate) enum Rounds {
    /// A client of the handshake era is asked over its session; the call
    /// goes again with the answers.
    Ask,
    /// A 2026-07-28 client gets it with the state sealed (by the gateway's key).
    Relay(Relayed, Arc<Gateway>),
}

impl Rounds {
    /// Sends the request to a stateless server and sees its input-required
    /// answers through.
    pub(crate) async fn run(
        self: Box<Self>,
        upstream: &AnyUpstream,
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
                crate::rounds::relay(first, relayed, &gateway.sessions.key)
            }
        }
    }
}

pub(crate) fn flatten(
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
pub(crate) fn parsed(answer: Answer) -> Result<Value, RpcError> {
    answer
        .into_value()
        .map_err(|e| rpc(INTERNAL_ERROR, &e.to_string()))
}

/// Removes the 2026-07-28 envelope keys from `_meta` (the gateway speaks to
/// servers in its own session), keeping everything else (`progressToken`).
pub(crate) fn strip_envelope(params: &mut Value) {
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            if let Value::Object(p) = params {
                p.remove("_meta");
            }
        }
    }
}

/// A 2026-07-28 client's request to a server spoken to statelessly carries
/// the client's own capabilities (those the gateway can take to it: sampling,
/// elicitation, roots), so the server refuses what the client could not
/// answer instead of asking it.
fn pass_capabilities(params: &mut Value, caps: &Value) {
    let Value::Object(p) = params else {
        return;
    };
    let own: serde_json::Map<String, Value> = ["sampling", "elicitation", "roots"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), caps.get(k)?.clone())))
        .collect();
    let meta = p.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        meta.insert(crate::gateway::META_CAPS.into(), Value::Object(own));
    }
}

pub(crate) struct AbortOnDrop {
    pub(crate) handle: futures_util::future::AbortHandle,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) key: (String, String),
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.handle.abort();
        self.gateway
            .calls
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.key);
    }
}

/// The client side of one forwarded request.
pub(crate) struct ClientLink {
    pub(crate) gateway: std::sync::Weak<Gateway>,
    /// The client's session; a server request its declared capabilities do
    /// not cover is refused here.
    pub(crate) session: Arc<Session>,
    pub(crate) tx: Arc<Outbox>,
}

/// What a server sends about one forwarded request (its own requests,
/// progress, log messages), on its way to the client: a queue and a wake-up,
/// lighter than a channel for the common request that has none.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) queue: Mutex<std::collections::VecDeque<Value>>,
    pub(crate) ready: tokio::sync::Notify,
    /// Set once nobody reads any more (the request is over).
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

impl Outbox {
    /// Queues a message; false once the request is over.
    pub(crate) fn send(&self, message: Value) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.queue.lock().expect("outbox lock").push_back(message);
        self.ready.notify_one();
        true
    }

    pub(crate) fn try_recv(&self) -> Option<Value> {
        self.queue.lock().expect("outbox lock").pop_front()
    }

    /// The next message. (A send between the check and the wait leaves a
    /// permit in `ready`, so none is missed.)
    pub(crate) async fn recv(&self) -> Value {
        loop {
            if let Some(message) = self.try_recv() {
                return message;
            }
            self.ready.notified().await;
        }
    }
}

/// The reading end of an [`Outbox`]: dropping it closes the box.
pub(crate) struct OutboxRx(pub(crate) Arc<Outbox>);

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
