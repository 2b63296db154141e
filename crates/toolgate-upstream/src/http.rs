//! The Streamable HTTP transport (MCP 2025-11-25): every message is a POST;
//! answers come back as JSON or as an SSE stream that belongs to that POST;
//! a GET SSE stream carries what belongs to no request. Header values are
//! never logged: they may hold secrets.
//!
//! A server that refuses the handshake as one speaking only the stateless
//! generation (see `modern`) is discovered with `server/discover` and then
//! spoken to statelessly: no session, no GET stream, and every request
//! carries its envelope and routing headers; a `subscriptions/listen`
//! stream (`listen`) carries its list changes.

use crate::conn::{Conn, Link};
use crate::modern::{self, Route};
use crate::sse::SseParser;
use crate::{CallError, Protocol, ServerInfo};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod listen;

pub(crate) use crate::pool::HttpClient;
use crate::pool::PooledBody;

/// How often a broken answer stream is resumed before the request fails.
const MAX_RESUMES: u32 = 3;
const DEFAULT_RETRY: Duration = Duration::from_millis(500);

/// The client for `uri`. An `https` server is verified against the system's
/// trust store (or the PEM bundle in `SSL_CERT_FILE` / the directory in
/// `SSL_CERT_DIR`, when set); an `http` one needs no certificates at all.
pub(crate) fn client(uri: &Uri) -> Result<HttpClient, String> {
    let mut connector = HttpConnector::new();
    // Small JSON-RPC messages must not wait for Nagle's algorithm.
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let mut roots = rustls::RootCertStore::empty();
    if uri.scheme_str() == Some("https") {
        roots.add_parsable_certificates(toolgate_tls::trust_roots("https")?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(HttpClient::new(https))
}

/// What an HTTP transport connects with, checked once when its connection
/// starts.
pub(crate) struct Endpoint {
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub client: HttpClient,
}

impl Endpoint {
    /// The endpoint at `url`, or why there can be none: a bad URL, a bad
    /// header, no TLS set-up.
    pub(crate) fn new(url: &str, headers: &[(String, String)]) -> Result<Endpoint, String> {
        let uri = parse_url(url)?;
        let headers = checked_headers(headers)?;
        let client = client(&uri)?;
        Ok(Endpoint {
            uri,
            headers,
            client,
        })
    }
}

/// Parses an upstream URL: `http` or `https`.
pub(crate) fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid upstream URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(uri),
        _ => Err(format!(
            "upstream URL {url:?} must start with http:// or https:// and name a host"
        )),
    }
}

pub(crate) struct HttpLink {
    client: HttpClient,
    uri: Uri,
    /// The configured headers, checked once; values are marked sensitive.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The server's session id and protocol version, kept as header values
    /// (a value that is not a valid one is never sent).
    session: Mutex<Option<HeaderValue>>,
    protocol: Mutex<Option<HeaderValue>>,
    /// Whether the server is spoken to statelessly (2026-07-28): set when it
    /// refused the handshake as a modern-only server and answered
    /// `server/discover`.
    stateless: AtomicBool,
    reinit: tokio::sync::Mutex<()>,
    get_stream: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Signalled when the server cannot be reached any more.
    lost: tokio::sync::Notify,
}

impl HttpLink {
    pub(crate) fn set_protocol(&self, version: &str) {
        *self.protocol.lock().unwrap() = HeaderValue::from_str(version).ok();
    }

    /// Whether requests go out statelessly (see [`HttpLink::stateless`]).
    pub(crate) fn is_stateless(&self) -> bool {
        self.stateless.load(Ordering::Acquire)
    }

    /// Switches the link to the stateless generation (or back): no session,
    /// and the stateless version in `MCP-Protocol-Version`.
    fn set_stateless(&self, stateless: bool) {
        *self.session.lock().unwrap() = None;
        if stateless {
            self.set_protocol(modern::STATELESS_VERSION);
        } else {
            *self.protocol.lock().unwrap() = None;
        }
        self.stateless.store(stateless, Ordering::Release);
    }

    fn session(&self) -> Option<HeaderValue> {
        self.session.lock().unwrap().clone()
    }

    fn request(
        &self,
        method: Method,
        body: Bytes,
        last_event_id: Option<&str>,
        route: Option<&Route>,
    ) -> Request<Bytes> {
        static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
        static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
        static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
        static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
        static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = self.uri.clone();
        let routing = if route.is_some() { 2 } else { 0 };
        *req.headers_mut() = HeaderMap::with_capacity(5 + routing + self.headers.len());
        let h = req.headers_mut();
        // Statics: `from_static` checks its text each time it runs.
        static BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
        static JSON: HeaderValue = HeaderValue::from_static("application/json");
        h.insert(ACCEPT, BOTH.clone());
        h.insert(CONTENT_TYPE, JSON.clone());
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
        if let Some(p) = self.protocol.lock().unwrap().clone() {
            h.insert(MCP_PROTOCOL_VERSION.clone(), p);
        }
        if let Some(s) = self.session.lock().unwrap().clone() {
            h.insert(MCP_SESSION_ID.clone(), s);
        }
        if let Some(id) = last_event_id.and_then(|s| HeaderValue::from_str(s).ok()) {
            h.insert(LAST_EVENT_ID.clone(), id);
        }
        if let Some(route) = route {
            h.insert(MCP_METHOD.clone(), route.method.clone());
            if let Some(name) = &route.name {
                h.insert(MCP_NAME.clone(), name.clone());
            }
        }
        req
    }
}

/// A server's configured headers, checked once when its connection starts
/// so a bad one is reported (by name only) instead of failing every request;
/// the values are marked sensitive.
pub(crate) fn checked_headers(
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .iter()
        .map(|(k, v)| {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    Ok((name, value))
                }
                _ => Err(format!("invalid value for header {k:?}")),
            }
        })
        .collect()
}

/// Runs the connection: handshake (retried with backoff), then the GET
/// stream, until shutdown; then DELETE the session. `probe`: the first
/// connection is a question (does the server speak this generation?), so
/// when it fails the connection goes down for good instead of retrying.
pub(crate) async fn supervise(
    conn: Arc<Conn>,
    url: String,
    headers: Vec<(String, String)>,
    protocol: Protocol,
    mut probe: bool,
) {
    let Some(Endpoint {
        uri,
        headers: checked,
        client,
    }) = conn.or_go_down(Endpoint::new(&url, &headers))
    else {
        return;
    };
    let link = Arc::new(HttpLink {
        client,
        uri,
        headers: checked,
        session: Mutex::new(None),
        protocol: Mutex::new(None),
        stateless: AtomicBool::new(false),
        reinit: tokio::sync::Mutex::new(()),
        get_stream: Mutex::new(None),
        lost: tokio::sync::Notify::new(),
    });
    let mut shutdown = conn.shutdown.subscribe();
    let mut delay = conn.spec.backoff.initial;
    loop {
        conn.set_link(Some(Link::Http(link.clone())));
        let r = tokio::select! {
            r = connect(&conn, &link, protocol) => r,
            _ = shutdown.changed() => break,
        };
        match r {
            Ok(info) => {
                probe = false;
                delay = conn.spec.backoff.initial;
                // A stateless server has no stream for what belongs to no
                // request: its list changes come on a listen stream.
                if link.is_stateless() {
                    listen::start(&conn, &link, &info);
                } else {
                    start_get_stream(&conn, &link);
                }
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = link.lost.notified() => {}
                }
                // The server went away: fail what is in flight, then connect
                // again (a new session) with backoff.
                if let Some(h) = link.get_stream.lock().unwrap().take() {
                    h.abort();
                }
                conn.go_down("the server cannot be reached");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => break,
                }
            }
            Err(e) => {
                conn.go_down(&format!("initialize failed: {e}"));
                if probe {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => break,
                }
                delay = (delay * 2).min(conn.spec.backoff.max);
            }
        }
    }
    if let Some(h) = link.get_stream.lock().unwrap().take() {
        h.abort();
    }
    conn.go_down("the gateway is shutting down");
    if link.session().is_some() {
        let grace = (*conn.shutdown.borrow())
            .unwrap_or_default()
            .max(Duration::from_millis(100));
        let req = link.request(Method::DELETE, Bytes::new(), None, None);
        let _ = tokio::time::timeout(grace, link.client.request(req)).await;
    }
}

/// Makes the connection ready: the 2025-11-25 handshake, as always first (a
/// server that speaks it is spoken to exactly as before); when the server
/// refuses it as one that speaks only the stateless generation,
/// `server/discover` at that version, and stateless requests from then on.
/// Every (re)connection starts over, so a server that changes generation is
/// followed. A configured `protocol` other than `Auto` speaks only that
/// generation.
async fn connect(
    conn: &Arc<Conn>,
    link: &Arc<HttpLink>,
    protocol: Protocol,
) -> Result<Arc<ServerInfo>, CallError> {
    if protocol == Protocol::Stateless {
        link.set_stateless(true);
        return conn.discover().await;
    }
    link.set_stateless(false);
    match conn.handshake().await {
        Err(CallError::Rpc(refusal))
            if protocol == Protocol::Auto && modern::refuses_handshake(&refusal) =>
        {
            link.set_stateless(true);
            let discovered = conn.discover().await;
            if discovered.is_err() {
                link.set_stateless(false);
            }
            discovered
        }
        other => other,
    }
}

fn start_get_stream(conn: &Arc<Conn>, link: &Arc<HttpLink>) {
    let task = tokio::spawn(get_stream(conn.clone(), link.clone()));
    if let Some(old) = link.get_stream.lock().unwrap().replace(task) {
        old.abort();
    }
}

/// The GET stream for messages that belong to no request; resumed with
/// Last-Event-ID when it breaks.
async fn get_stream(conn: Arc<Conn>, link: Arc<HttpLink>) {
    let session = link.session();
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let req = link.request(Method::GET, Bytes::new(), last_id.as_deref(), None);
        let mut retry = DEFAULT_RETRY;
        match link.client.request(req).await {
            Ok(resp) if resp.status() == StatusCode::OK && is_sse(&resp) => {
                failures = 0;
                let mut parser = SseParser::default();
                parser.last_id = last_id.clone();
                read_sse(&conn, resp, &mut parser, None).await;
                last_id = parser.last_id.clone();
                if let Some(ms) = parser.retry_ms {
                    retry = Duration::from_millis(ms);
                }
            }
            // 405: the server offers no GET stream; other answers: give up.
            Ok(_) => return,
            Err(e) if e.is_connect() => {
                link.lost.notify_one();
                return;
            }
            Err(_) => failures += 1,
        }
        if failures > 5 || conn.is_shutting_down() || link.session() != session {
            return;
        }
        tokio::time::sleep(retry).await;
    }
}

fn is_sse(resp: &Response<PooledBody>) -> bool {
    content_type_is(resp, b"text/event-stream")
}

/// Whether the answer's media type starts with `prefix` (lowercase), in any
/// case.
fn content_type_is(resp: &Response<PooledBody>, prefix: &[u8]) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..prefix.len()))
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// Reads an SSE body to its end, dispatching every message.
async fn read_sse(
    conn: &Arc<Conn>,
    resp: Response<PooledBody>,
    parser: &mut SseParser,
    origin: Option<u64>,
) {
    let mut body = resp.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for ev in parser.push(&data) {
            if ev.event.is_empty() || ev.event == "message" {
                if let Ok(msg) = serde_json::from_str::<Value>(&ev.data) {
                    conn.dispatch(msg, origin);
                }
            }
        }
        if let Some(id) = origin {
            if !conn.is_pending(id) {
                return;
            }
        }
    }
}

pub(crate) fn spawn_post(conn: Arc<Conn>, link: Arc<HttpLink>, body: Bytes, origin: Option<u64>) {
    tokio::spawn(post(conn, link, body, false, origin, None));
}

fn fail(conn: &Conn, origin: Option<u64>, reason: String) {
    if let Some(id) = origin {
        conn.complete(id, Err(CallError::Unavailable(reason)));
    }
}

/// POSTs one message (`body`, JSON text; `is_init` for `initialize`;
/// `route`, the routing headers of a stateless request) and routes what
/// comes back.
pub(crate) async fn post(
    conn: Arc<Conn>,
    link: Arc<HttpLink>,
    body: Bytes,
    is_init: bool,
    origin: Option<u64>,
    route: Option<Box<Route>>,
) {
    if is_init {
        *link.session.lock().unwrap() = None;
        *link.protocol.lock().unwrap() = None;
    }
    let mut retried = false;
    let resp = loop {
        let session = link.session();
        let req = link.request(Method::POST, body.clone(), None, route.as_deref());
        let resp = match link.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                if e.is_connect() && !is_init {
                    link.lost.notify_one();
                }
                return fail(
                    &conn,
                    origin,
                    format!(
                        "POST to server {} failed: {}",
                        conn.name(),
                        toolgate_tls::describe(&e)
                    ),
                );
            }
        };
        if resp.status() == StatusCode::NOT_FOUND && session.is_some() && !is_init && !retried {
            // The session expired: initialize a new one once, then retry.
            retried = true;
            if let Err(e) = reinitialize(&conn, &link, session).await {
                return fail(
                    &conn,
                    origin,
                    format!("session expired and re-initialize failed: {e}"),
                );
            }
            continue;
        }
        break resp;
    };
    if is_init {
        if let Some(s) = resp.headers().get("mcp-session-id") {
            *link.session.lock().unwrap() = Some(s.clone());
        }
    }
    let status = resp.status();
    if status == StatusCode::ACCEPTED {
        return fail(
            &conn,
            origin,
            "server answered a request with 202 Accepted".into(),
        );
    }
    if status.is_success() && is_sse(&resp) {
        let mut parser = SseParser::default();
        read_sse(&conn, resp, &mut parser, origin).await;
        let Some(id) = origin else { return };
        resume(&conn, &link, id, parser).await;
        return;
    }
    let json = content_type_is(&resp, b"application/json");
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(&conn, origin, format!("reading the answer failed: {e}")),
    };
    if json {
        if let Some(id) = origin {
            // The common answer, a result for this very request, is kept as
            // the server sent it (its caller passes it on).
            if let Ok(answer) = serde_json::from_slice::<ResultEnvelope<'_>>(&bytes) {
                if answer.jsonrpc == "2.0" && answer.id == id {
                    conn.complete_raw(id, answer.result);
                    return;
                }
            }
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(msgs)) => msgs.into_iter().for_each(|m| conn.dispatch(m, origin)),
            // An error the server could not address (`"id": null`, as when
            // it refuses a request before reading its id) answers this POST.
            Ok(m) if origin.is_some() && m.get("id") == Some(&Value::Null) => {
                if let (Some(id), Some(error)) = (origin, m.get("error")) {
                    conn.complete(
                        id,
                        Err(CallError::Rpc(crate::conn::rpc_error(error.clone()))),
                    );
                }
            }
            Ok(m) => conn.dispatch(m, origin),
            // Not one value: messages one after another (JSON lines, as the
            // conformance suite's reference server streams some answers),
            // each taken when all of them parse.
            Err(_) => {
                let stream = serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>();
                if let Ok(msgs) = stream.collect::<Result<Vec<Value>, _>>() {
                    msgs.into_iter().for_each(|m| conn.dispatch(m, origin));
                }
            }
        }
    }
    if let Some(id) = origin {
        if conn.is_pending(id) {
            fail(
                &conn,
                Some(id),
                format!("server answered HTTP {status} without a JSON-RPC answer"),
            );
        }
    }
}

/// A JSON-RPC success response and nothing else (any other member, a repeated
/// one or another shape fails to parse, and the message is read in full).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultEnvelope<'a> {
    #[serde(borrow)]
    jsonrpc: std::borrow::Cow<'a, str>,
    id: u64,
    result: Box<serde_json::value::RawValue>,
}

/// The answer stream of request `id` ended before the answer: resume it with
/// GET + Last-Event-ID when its events had ids, else fail the request.
async fn resume(conn: &Arc<Conn>, link: &Arc<HttpLink>, id: u64, mut parser: SseParser) {
    let mut attempts = 0;
    while conn.is_pending(id) {
        let Some(last) = parser.last_id.clone() else {
            break;
        };
        if attempts >= MAX_RESUMES {
            break;
        }
        attempts += 1;
        tokio::time::sleep(parser.retry_ms.map_or(DEFAULT_RETRY, Duration::from_millis)).await;
        let req = link.request(Method::GET, Bytes::new(), Some(&last), None);
        match link.client.request(req).await {
            Ok(resp) if resp.status().is_success() && is_sse(&resp) => {
                attempts = 0;
                let before = parser.last_id.clone();
                read_sse(conn, resp, &mut parser, Some(id)).await;
                if parser.last_id == before {
                    attempts = MAX_RESUMES.saturating_sub(1).max(attempts);
                }
            }
            _ => {}
        }
    }
    if conn.is_pending(id) {
        fail(
            conn,
            Some(id),
            "the answer stream ended before the answer came".into(),
        );
    }
}

/// Starts a new session after the old one expired (404). Only the first
/// caller for a given expired session does the work.
async fn reinitialize(
    conn: &Arc<Conn>,
    link: &Arc<HttpLink>,
    expired: Option<HeaderValue>,
) -> Result<(), CallError> {
    let _guard = link.reinit.lock().await;
    if link.session() != expired {
        return Ok(());
    }
    conn.handshake().await?;
    start_get_stream(conn, link);
    Ok(())
}
