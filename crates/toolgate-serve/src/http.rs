//! The Streamable HTTP front: one endpoint, `/mcp`, for both protocol
//! generations. Checks come first and in this order: the Host and Origin
//! headers (DNS-rebinding protection) and the bearer token, on the head
//! alone (`admit`: the body of a request they refuse is never read), the
//! size of the body, strict JSON (a repeated key is refused), the routing headers of a
//! 2026-07-28 request against its body, and the session.

// A refusal at the HTTP layer is returned as the response itself; it is
// built once per refused request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use crate::gateway::{
    Caller, Context, Gateway, Reply, SessionRefused, HANDSHAKE_VERSIONS, HEADER_MISMATCH,
    LEGACY_VERSIONS, META_CAPS, META_VERSION, STATELESS_VERSION, UNSUPPORTED_PROTOCOL_VERSION,
};
use crate::h1::{self, BodyError, Req};
use crate::legacy::LegacySessions;
use crate::replay::EventLog;
use crate::streams::Listen;
use bytes::Bytes;
use headers::{check_routing_headers, header, LAST_EVENT_ID, MCP_SESSION_ID};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sse::{sse, sse_listen, sse_log, sse_response};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use toolgate_audit::LogLevel;
use toolgate_call::answer::Era;
use toolgate_jsonrpc::{
    error_response, StrictError, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};

mod headers;
mod sse;

pub(crate) use headers::Heads;
pub(crate) use sse::event_frame;

pub type Body = BoxBody<Bytes, Infallible>;

/// The HTTP settings of the front.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub max_message_bytes: usize,
    /// How long one POST may take before the client gets 504 (the upstream
    /// request is then cancelled).
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The address the listener is bound to.
    pub listen: SocketAddr,
    /// Threads serving connections, the calling one included (at least 1).
    pub workers: usize,
}

/// Serves until `shutdown` resolves, then lets requests in flight finish
/// (up to `shutdown_grace`).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let opts = Arc::new(opts);
    let legacy = Arc::new(LegacySessions::default());
    let limits = h1::Limits {
        request_read: REQUEST_READ_TIMEOUT,
        max_body: opts.max_message_bytes,
        budget: h1::BodyBudget::new(body_budget(opts.max_message_bytes)),
    };
    // Every connection holds a receiver: `closed()` resolves when the last
    // one has finished.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = Workers::start(opts.workers);
    tokio::pin!(shutdown);
    // At most MAX_CONNECTIONS at once (each agent may hold a GET stream
    // open besides its requests); out of descriptors, the loop backs off
    // instead of spinning.
    let acceptor = toolgate_listen::Acceptor::new(listener, MAX_CONNECTIONS);
    loop {
        let (stream, slot) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let opts = opts.clone();
        let legacy = legacy.clone();
        let stopped = stopped.clone();
        let limits = limits.clone();
        workers.spawn(stream, move |stream| async move {
            let _slot = slot;
            h1::connection(
                stream,
                limits,
                stopped,
                |req| admit(&gateway, &opts, req),
                |req, caller| handle(&gateway, &opts, &legacy, req, caller),
            )
            .await;
        });
    }
    drop(acceptor);
    drop(stopped);
    let _ = stop.send(true);
    // Event streams (GET, subscriptions/listen) never finish by themselves:
    // they end now, calls in flight get the grace time.
    gateway.end_streams();
    let _ = tokio::time::timeout(opts.shutdown_grace, stop.closed()).await;
}

/// The threads that serve connections: the caller's and `n - 1` more, each
/// with a single-threaded runtime of its own. A connection is served start
/// to end on one of them (taken in turn), together with the upstream
/// connections its requests use (the client pools per thread), so a call
/// never wakes another thread, while more connections use more cores.
struct Workers {
    others: Vec<tokio::runtime::Handle>,
    next: std::cell::Cell<usize>,
    /// Dropped with `Workers`: each thread then ends its runtime (and the
    /// connections left on it).
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    fn start(n: usize) -> Workers {
        let mut others = Vec::new();
        let mut stops = Vec::new();
        for i in 1..n.max(1) {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (tx, rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new()
                .name(format!("tg-worker-{i}"))
                .spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    let _ = tx.send(runtime.handle().clone());
                    let _ = runtime.block_on(stopped);
                });
            // A thread or runtime that cannot start leaves its share to the
            // others (the calling thread always serves).
            if let (Ok(_), Ok(handle)) = (started, rx.recv()) {
                others.push(handle);
                stops.push(stop);
            }
        }
        Workers {
            others,
            next: std::cell::Cell::new(0),
            _stop: stops,
        }
    }

    /// Serves `stream` with `serve` on the next thread in turn.
    fn spawn<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.get();
        self.next.set((turn + 1) % (self.others.len() + 1));
        let Some(handle) = turn.checked_sub(1).map(|i| &self.others[i]) else {
            tokio::spawn(serve(stream));
            return;
        };
        // The socket moves to the other thread's reactor.
        let Ok(stream) = stream.into_std() else {
            return;
        };
        handle.spawn(async move {
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                serve(stream).await;
            }
        });
    }
}

/// The client connections `toolgate serve` holds at once; the next waits
/// for one to close.
pub const MAX_CONNECTIONS: usize = 16 * 1024;

/// How long a client may take to send one whole request; an idle
/// keep-alive connection is closed after this long.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The least memory that large request bodies (over 64 KiB) of all
/// connections may hold together; the budget is this or twice the message
/// limit, whichever is more (past it, a large body waits up to 2 s, then 503).
pub const MIN_BODY_BUDGET: usize = 64 << 20;

fn body_budget(max_message_bytes: usize) -> usize {
    MIN_BODY_BUDGET.max(max_message_bytes.saturating_mul(2))
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(value).expect("serialisable"),
    )
}

pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// 405 with the methods the path does take.
fn method_not_allowed(allow: &'static str, message: &str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, message);
    response
        .headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    response
}

fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<Body> {
    json_response(status, &error_response(id, code, message, data))
}

/// What a request's head alone decides, before any of its body is read
/// (h1 calls it with the head): the path, the Host and Origin, the bearer
/// token. `Err`: the answer, and the body is never read.
fn admit(gateway: &Arc<Gateway>, opts: &HttpOptions, req: &Req) -> Result<Caller, Response<Body>> {
    match req.uri().path() {
        "/mcp" | "/sse" | "/messages" => {}
        "/healthz" => return Err(text(StatusCode::OK, "ok")),
        _ => {
            return Err(text(
                StatusCode::NOT_FOUND,
                "not found: the MCP endpoint is /mcp",
            ))
        }
    }
    check_host_and_origin(opts, req.headers())?;
    let token = header(req.headers(), &AUTHORIZATION).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let Some(caller) = gateway.authenticate(token) else {
        let challenge = if token.is_some() {
            r#"Bearer realm="toolgate", error="invalid_token""#
        } else {
            r#"Bearer realm="toolgate""#
        };
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "unauthorized: a valid bearer token is required",
        );
        response
            .headers_mut()
            .insert("www-authenticate", HeaderValue::from_static(challenge));
        return Err(response);
    };
    Ok(caller)
}

/// A request [`admit`] let through, its body read.
async fn handle(
    gateway: &Arc<Gateway>,
    opts: &HttpOptions,
    legacy: &Arc<LegacySessions>,
    req: Req,
    caller: Caller,
) -> Response<Body> {
    match req.uri().path() {
        "/sse" => return legacy_open(gateway, legacy, &caller, &req),
        "/messages" => return legacy_post(gateway, opts, legacy, &caller, req).await,
        _ => {}
    }
    match *req.method() {
        Method::POST => {
            // Boxed: the call's future is large, and moving it costs a copy.
            let call = Box::pin(post(gateway, opts, caller, req));
            match tokio::time::timeout(opts.request_timeout, call).await {
                Ok(response) => response,
                Err(_) => rpc_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &Value::Null,
                    toolgate_jsonrpc::INTERNAL_ERROR,
                    &format!(
                        "request timed out after {:?} (http.request_timeout)",
                        opts.request_timeout
                    ),
                    None,
                ),
            }
        }
        Method::GET => get(gateway, &caller, req.headers()),
        Method::DELETE => delete(gateway, &caller, req.headers()).await,
        _ => method_not_allowed("GET, POST, DELETE", "method not allowed"),
    }
}

fn check_host_and_origin(opts: &HttpOptions, headers: &HeaderMap) -> Result<(), Response<Body>> {
    let enforce_host = opts.listen.ip().is_loopback() || !opts.allowed_hosts.is_empty();
    if enforce_host {
        let host = header(headers, &HOST).unwrap_or_default();
        let allowed = toolgate_listen::is_loopback_host(host)
            || host == opts.listen.to_string()
            || opts
                .allowed_hosts
                .iter()
                .any(|h| h == host || host.rsplit_once(':').is_some_and(|(n, _)| n == h));
        if !allowed {
            return Err(text(
                StatusCode::FORBIDDEN,
                &format!("forbidden: host {host:?} is not allowed (http.allowed_hosts)"),
            ));
        }
    }
    if let Some(origin) = header(headers, &ORIGIN) {
        let host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        let allowed = opts.allowed_origins.iter().any(|o| o == origin)
            || (origin.starts_with("http://") || origin.starts_with("https://"))
                && toolgate_listen::is_loopback_host(host);
        if !allowed {
            return Err(text(
                StatusCode::FORBIDDEN,
                &format!("forbidden: origin {origin:?} is not allowed (http.allowed_origins)"),
            ));
        }
    }
    Ok(())
}

/// Reads a POST body: within the size limit, strict JSON (a repeated key is
/// refused); a batch is a JSON array, never an empty one.
/// The text of a single `tools/call`'s `params.arguments`, when they hold a
/// number a `Value` may not hold exactly (a non-integer): the policy engine
/// compares such numbers by their text (`Call::arguments_text`).
fn inexact_arguments_text(bytes: &[u8], value: &Value) -> Option<Box<str>> {
    fn has_float(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(has_float),
            Value::Object(map) => map.values().any(has_float),
            _ => false,
        }
    }
    if value.get("method").and_then(Value::as_str) != Some("tools/call")
        || !value.pointer("/params/arguments").is_some_and(has_float)
    {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        arguments: Option<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    let message: Message<'_> = serde_json::from_slice(bytes).ok()?;
    Some(message.params?.arguments?.get().into())
}

fn read_json(
    gateway: &Arc<Gateway>,
    opts: &HttpOptions,
    body: Result<Bytes, BodyError>,
) -> Result<(Value, Option<Box<str>>), Response<Body>> {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let limit = opts.max_message_bytes;
            return Err(rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Value::Null,
                INVALID_REQUEST,
                &format!("Invalid Request: message exceeds the gateway's limit of {limit} bytes"),
                None,
            ));
        }
    };
    // One pass: parse and refuse duplicate keys at any depth.
    let value = match toolgate_jsonrpc::parse_strict(&bytes) {
        Ok(toolgate_jsonrpc::Parsed::Single(value)) => value,
        Ok(toolgate_jsonrpc::Parsed::Batch(items)) if items.is_empty() => {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                INVALID_REQUEST,
                "Invalid Request: empty batch",
                None,
            ))
        }
        Ok(toolgate_jsonrpc::Parsed::Batch(items)) => Value::Array(items),
        Err(StrictError::DuplicateKey(key)) => {
            gateway.audit.log(
                LogLevel::Warn,
                &format!("refused a message that repeats the key {key:?}"),
            );
            let id = toolgate_jsonrpc::peek_id(&bytes).map_or(Value::Null, |id| id.to_value());
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                &id,
                INVALID_REQUEST,
                &format!("Invalid Request: duplicate key {key:?}"),
                None,
            ));
        }
        Err(e) => {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                PARSE_ERROR,
                &format!("Parse error: {e}"),
                None,
            ))
        }
    };
    let arguments_text = inexact_arguments_text(&bytes, &value);
    Ok((value, arguments_text))
}

async fn post(
    gateway: &Arc<Gateway>,
    opts: &HttpOptions,
    caller: Caller,
    req: Req,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (value, arguments_text) = match read_json(gateway, opts, body) {
        Ok(read) => read,
        Err(response) => return response,
    };
    let mut heads = Heads::of(&parts.headers);
    heads.arguments_text = arguments_text;
    match value {
        Value::Array(items) => {
            // Every message is decided on its own; streams are not used in a batch.
            let mut answers = Vec::new();
            for item in items {
                match message(gateway, &caller, &heads, item).await {
                    Answer::Reply(Reply::Json(v), _) => answers.push(v),
                    Answer::Reply(Reply::Raw(bytes), _) => {
                        answers.push(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                            error_response(
                                &Value::Null,
                                toolgate_jsonrpc::INTERNAL_ERROR,
                                &format!("the server's answer cannot be read: {e}"),
                                None,
                            )
                        }))
                    }
                    Answer::Reply(Reply::Stream(log), _) => {
                        let mut last = None;
                        let mut index = 0;
                        while let Some(m) = log.get(index).await {
                            last = Some(m);
                            index += 1;
                        }
                        answers.extend(last);
                    }
                    Answer::Reply(Reply::Accepted, _) => {}
                    Answer::Http(response) => return response,
                }
            }
            if answers.is_empty() {
                return full(StatusCode::ACCEPTED, "text/plain", "");
            }
            json_response(StatusCode::OK, &Value::Array(answers))
        }
        single => match message(gateway, &caller, &heads, single).await {
            Answer::Http(response) => response,
            Answer::Reply(reply, session) => {
                let mut response = match reply {
                    Reply::Json(v) => json_response(StatusCode::OK, &v),
                    Reply::Raw(bytes) => full(StatusCode::OK, "application/json", bytes),
                    Reply::Accepted => full(StatusCode::ACCEPTED, "text/plain", ""),
                    Reply::Stream(log) => sse_log(log, 0),
                };
                if let Some(token) = session {
                    response.headers_mut().insert(
                        MCP_SESSION_ID.clone(),
                        HeaderValue::from_str(&token).expect("ascii token"),
                    );
                }
                response
            }
        },
    }
}

pub(crate) enum Answer {
    /// The reply, and a new session token to hand out.
    Reply(Reply, Option<String>),
    /// Refused at the HTTP layer.
    Http(Response<Body>),
}

pub(crate) async fn message(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    heads: &Heads<'_>,
    message: Value,
) -> Answer {
    let invalid = |id: &Value, why: &str| {
        Answer::Http(rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            &format!("Invalid Request: {why}"),
            None,
        ))
    };
    let Value::Object(object) = message else {
        return invalid(&Value::Null, "not a JSON-RPC 2.0 message");
    };
    // Taken apart in one pass (a lookup per member would hash each key).
    let (mut jsonrpc, mut id, mut method, mut params) = (None, None, None, None);
    let mut rest = serde_json::Map::new();
    for (key, value) in object {
        match key.as_str() {
            "jsonrpc" => jsonrpc = Some(value),
            "id" => id = Some(value),
            "method" => method = Some(value),
            "params" => params = Some(value),
            _ => {
                rest.insert(key, value);
            }
        }
    }
    if jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return invalid(
            id.as_ref().unwrap_or(&Value::Null),
            "not a JSON-RPC 2.0 message",
        );
    }
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return invalid(&Value::Null, "the id must be a string or an integer");
        }
    }
    let method = match method {
        Some(Value::String(m)) => Some(m),
        Some(_) => {
            return invalid(
                id.as_ref().unwrap_or(&Value::Null),
                "method must be a string",
            )
        }
        None => None,
    };
    let params = params.unwrap_or(Value::Null);
    if !(params.is_object() || params.is_null()) {
        return invalid(
            id.as_ref().unwrap_or(&Value::Null),
            "params must be an object",
        );
    }
    let rid = id.clone().unwrap_or(Value::Null);
    // Only calls are traced.
    let trace = match method.as_deref() {
        Some("tools/call") => Context::trace_of(
            Heads::get(heads.traceparent),
            Heads::get(heads.tracestate),
            &params,
        ),
        _ => None,
    };

    // The context of a request with no session, from its envelope.
    let stateless = |meta: &Value| Context {
        caller: caller.clone(),
        session: gateway.stateless_session(caller, meta),
        era: Era::Stateless,
        trace: trace.clone(),
        arguments_text: heads.arguments_text.clone(),
    };

    // The era: a 2026-07-28 request names its version in `_meta`.
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .cloned();
    if let Some(method) = &method {
        if let Err(response) = check_routing_headers(heads, &rid, method, &params) {
            return Answer::Http(response);
        }
    }
    let header_version = Heads::get(heads.protocol_version);
    if meta_version.is_some() || header_version == Some(STATELESS_VERSION) {
        if let Some(method) = method.as_deref().filter(|_| id.is_some()) {
            if let Err(why) = envelope_problem(&params) {
                return Answer::Http(rpc_error(
                    StatusCode::BAD_REQUEST,
                    &rid,
                    INVALID_PARAMS,
                    &format!("Invalid params: {why}"),
                    None,
                ));
            }
            if REMOVED_IN_STATELESS.contains(&method) {
                return Answer::Http(method_not_found(&rid, method));
            }
        }
    }
    if let Some(version) = meta_version {
        if header_version.is_none() || header_version != version.as_str() {
            return Answer::Http(rpc_error(StatusCode::BAD_REQUEST, &rid, HEADER_MISMATCH,
                "Header mismatch: MCP-Protocol-Version does not match the request's protocol version", None));
        }
        if version.as_str() != Some(STATELESS_VERSION) {
            return Answer::Http(rpc_error(
                StatusCode::BAD_REQUEST,
                &rid,
                UNSUPPORTED_PROTOCOL_VERSION,
                "Unsupported protocol version",
                Some(json!({"supported": [STATELESS_VERSION], "requested": version})),
            ));
        }
        let (Some(method), Some(id)) = (method, id) else {
            return Answer::Reply(Reply::Accepted, None);
        };
        if method == "subscriptions/listen" {
            return match Listen::of(&id, &params) {
                Ok(listen) => Answer::Http(sse_listen(listen, gateway.open_listen(caller))),
                Err(why) => Answer::Http(rpc_error(
                    StatusCode::BAD_REQUEST,
                    &id,
                    INVALID_PARAMS,
                    &format!("Invalid params: {why}"),
                    None,
                )),
            };
        }
        let ctx = stateless(&params["_meta"]);
        return match gateway.request(&ctx, &id, &method, params).await {
            // 2026-07-28: a method the server does not have is a 404.
            Reply::Json(v) if v.pointer("/error/code") == Some(&json!(METHOD_NOT_FOUND)) => {
                Answer::Http(json_response(StatusCode::NOT_FOUND, &v))
            }
            // A capability the client did not declare (the server's refusal,
            // passed on): a 400, as the server sent it.
            Reply::Json(v)
                if v.pointer("/error/code") == Some(&json!(MISSING_CLIENT_CAPABILITY)) =>
            {
                Answer::Http(json_response(StatusCode::BAD_REQUEST, &v))
            }
            reply => Answer::Reply(reply, None),
        };
    }

    if method.as_deref() == Some("initialize") {
        let Some(id) = id else {
            return invalid(&Value::Null, "initialize must be a request");
        };
        let versions = if heads.legacy {
            LEGACY_VERSIONS
        } else {
            HANDSHAKE_VERSIONS
        };
        let (answer, token) = gateway.initialize(caller, &id, &params, versions);
        return Answer::Reply(Reply::Json(answer), Some(token));
    }
    if method.as_deref() == Some("server/discover") {
        let Some(id) = id else {
            return invalid(&Value::Null, "server/discover must be a request");
        };
        let ctx = stateless(&Value::Null);
        return Answer::Reply(
            gateway.request(&ctx, &id, "server/discover", params).await,
            None,
        );
    }
    if let Some(v) = Heads::get(heads.protocol_version) {
        if !HANDSHAKE_VERSIONS.contains(&v) {
            return Answer::Http(text(
                StatusCode::BAD_REQUEST,
                &format!("bad request: unsupported MCP-Protocol-Version {v:?}"),
            ));
        }
    }
    let Some(token) = Heads::get(heads.session_id) else {
        return Answer::Http(rpc_error(
            StatusCode::BAD_REQUEST,
            &rid,
            INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required (send initialize first)",
            None,
        ));
    };
    let session = match gateway.live_session(caller, token) {
        Ok(session) => session,
        Err(SessionRefused::NotFound) => {
            return Answer::Http(rpc_error(
                StatusCode::NOT_FOUND,
                &rid,
                -32001,
                "Session not found",
                None,
            ))
        }
        Err(SessionRefused::Unavailable(why)) => {
            return Answer::Http(rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &rid,
                toolgate_jsonrpc::INTERNAL_ERROR,
                &session_unavailable(&why),
                None,
            ))
        }
    };
    match (method, id) {
        (Some(method), Some(id)) => {
            let ctx = Context {
                caller: caller.clone(),
                session,
                era: Era::Handshake,
                trace,
                arguments_text: heads.arguments_text.clone(),
            };
            Answer::Reply(gateway.request(&ctx, &id, &method, params).await, None)
        }
        (Some(method), None) => {
            match method.as_str() {
                "notifications/cancelled" => gateway.cancel(&session.id, &params),
                "notifications/roots/list_changed" => gateway.roots_changed(&session.id).await,
                _ => {}
            }
            Answer::Reply(Reply::Accepted, None)
        }
        (None, Some(id)) => {
            let mut response = serde_json::Map::new();
            response.insert("jsonrpc".into(), Value::String("2.0".into()));
            response.insert("id".into(), id);
            response.extend(rest);
            gateway.client_response(&session.id, &Value::Object(response));
            Answer::Reply(Reply::Accepted, None)
        }
        (None, None) => invalid(
            &Value::Null,
            "neither a request, a notification nor a response",
        ),
    }
}

/// JSON-RPC code of 2026-07-28's MissingRequiredClientCapabilityError.
const MISSING_CLIENT_CAPABILITY: i64 = -32021;

/// Methods of the handshake era that 2026-07-28 removed: a stateless client
/// asking for one gets 404 and -32601, as for any method the server lacks.
const REMOVED_IN_STATELESS: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

fn method_not_found(id: &Value, method: &str) -> Response<Body> {
    rpc_error(
        StatusCode::NOT_FOUND,
        id,
        METHOD_NOT_FOUND,
        &format!("Method not found: {method}"),
        None,
    )
}

/// What is wrong with a 2026-07-28 request's envelope: every request carries
/// `_meta` with its protocol version and the client's capabilities.
fn envelope_problem(params: &Value) -> Result<(), &'static str> {
    let Some(meta) = params.get("_meta") else {
        return Err("a 2026-07-28 request needs params._meta");
    };
    if !meta.is_object() {
        return Err("params._meta must be an object");
    }
    if !meta.get(META_VERSION).is_some_and(Value::is_string) {
        return Err("params._meta needs io.modelcontextprotocol/protocolVersion");
    }
    if !meta.get(META_CAPS).is_some_and(Value::is_object) {
        return Err("params._meta needs io.modelcontextprotocol/clientCapabilities");
    }
    Ok(())
}

/// `GET /sse`: a legacy (2024-11-05) client's event stream.
fn legacy_open(
    gateway: &Arc<Gateway>,
    legacy: &Arc<LegacySessions>,
    caller: &Caller,
    req: &Req,
) -> Response<Body> {
    if req.method() != Method::GET {
        return method_not_allowed("GET", "method not allowed");
    }
    sse_response(legacy.open(gateway, caller).boxed())
}

/// `POST /messages?session_id=ID`: a legacy client's messages; answered on
/// its event stream.
async fn legacy_post(
    gateway: &Arc<Gateway>,
    opts: &HttpOptions,
    legacy: &Arc<LegacySessions>,
    caller: &Caller,
    req: Req,
) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST", "method not allowed");
    }
    let id = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("session_id="))
            .map(str::to_string)
    });
    let Some(id) = id else {
        return text(
            StatusCode::BAD_REQUEST,
            "bad request: session_id is missing",
        );
    };
    // Legacy messages are decided on their values alone (numbers a value
    // may not hold exactly are refused near a bound, never admitted).
    let value = match read_json(gateway, opts, req.into_body()) {
        Ok((value, _)) => value,
        Err(response) => return response,
    };
    let messages = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    match legacy.post(gateway, caller, &id, messages) {
        Some(()) => full(StatusCode::ACCEPTED, "text/plain", "Accepted"),
        None => text(StatusCode::NOT_FOUND, "session not found"),
    }
}

fn get(gateway: &Arc<Gateway>, caller: &Caller, headers: &HeaderMap) -> Response<Body> {
    if !header(headers, &ACCEPT).is_some_and(|a| a.contains("text/event-stream")) {
        return text(
            StatusCode::NOT_ACCEPTABLE,
            "not acceptable: GET /mcp is an event stream (Accept: text/event-stream)",
        );
    }
    let Some(token) = header(headers, &MCP_SESSION_ID) else {
        return method_not_allowed("POST, DELETE", "method not allowed: GET needs a session");
    };
    let session = match gateway.live_session(caller, token) {
        Ok(session) => session,
        Err(SessionRefused::NotFound) => return text(StatusCode::NOT_FOUND, "session not found"),
        Err(SessionRefused::Unavailable(why)) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, &session_unavailable(&why))
        }
    };
    // Resuming a streamed answer whose connection broke.
    if let Some(last) = header(headers, &LAST_EVENT_ID) {
        if let Some((stream, index)) = EventLog::parse_event_id(last) {
            if let Some(log) = gateway.resumable(&session.id, stream) {
                return sse_log(log, index + 1);
            }
        }
    }
    sse(gateway.open_stream(caller, &session.id))
}

async fn delete(gateway: &Arc<Gateway>, caller: &Caller, headers: &HeaderMap) -> Response<Body> {
    let Some(token) = header(headers, &MCP_SESSION_ID) else {
        return text(StatusCode::NOT_FOUND, "session not found");
    };
    let session = match gateway.live_session(caller, token) {
        Ok(session) => session,
        Err(SessionRefused::NotFound) => return text(StatusCode::NOT_FOUND, "session not found"),
        Err(SessionRefused::Unavailable(why)) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, &session_unavailable(&why))
        }
    };
    // Recorded first: a session that could not be ended everywhere is not
    // ended here either, and the client may try again.
    if let Err(e) = gateway.revoke_session(&session) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("service unavailable: the session was not ended ({e}); try again"),
        );
    }
    gateway.close_session(&session.id).await;
    full(StatusCode::OK, "text/plain", "")
}

/// The answer when the revocation store cannot say whether a session ended.
fn session_unavailable(why: &str) -> String {
    format!("service unavailable: cannot check whether the session was ended ({why}); refused rather than continuing a session that may have been deleted")
}

#[cfg(test)]
mod tests;
