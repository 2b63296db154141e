//! The admin HTTP API, on its own listener:
//!
//! - `GET /approvals[?all=true]`: pending requests (every request with `all`);
//! - `GET /approvals/{id}`;
//! - `POST /approvals/{id}/approve` and `/deny`, body `{"reason", "by"}`
//!   (both optional);
//! - `POST /webhook/decide`: the signed callback of the webhook receiver;
//! - `GET /metrics`: the Prometheus exposition (docs/observability.md), when
//!   the gateway passes a [`MetricsSource`];
//! - with a dashboard ([`serve_admin_with_console`]): its page and assets
//!   (`GET /`, `/assets/...`, no token: they hold no data) and its JSON API
//!   (`/api/...`, answered by toolgate-console).
//!
//! Every route but the callback needs `Authorization: Bearer <admin token>`,
//! checked before anything else (an unauthenticated caller learns nothing,
//! not even which routes exist). Every refusal is a [`Refusal`], answered as
//! `{"error": {"code", "message"}}` by [`Refusal::response`].

use crate::signature::{BadSignature, SeenSignatures, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::{now_ms, request_json, AdminOptions};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use toolgate_approvals::{ApprovalError, ApprovalEvents, ApprovalStore, Decided, Via};

type Body = Full<Bytes>;

/// The largest request body (a decision is a few hundred bytes).
const MAX_BODY: usize = 64 << 10;
/// The largest dashboard request (a whole policy file, as text or document).
const MAX_CONSOLE_BODY: usize = 4 << 20;
/// Limits on what a decision may say about itself.
const MAX_BY_CHARS: usize = 128;
const MAX_REASON_CHARS: usize = 2000;
/// How long requests in flight may finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Admin {
    store: Arc<dyn ApprovalStore>,
    events: Arc<dyn ApprovalEvents>,
    opts: AdminOptions,
    seen: SeenSignatures,
    metrics: Option<Arc<dyn MetricsSource>>,
    console: Option<Arc<toolgate_console::Console>>,
}

/// What `GET /metrics` answers: the Prometheus text exposition, format 0.0.4.
pub trait MetricsSource: Send + Sync {
    fn render(&self) -> String;
}

/// Serves the admin API on `listener` until `shutdown` resolves, then lets
/// requests in flight finish (up to 5 s). `metrics`: what `GET /metrics`
/// serves (`None`: no such route).
pub async fn serve_admin(
    store: Arc<dyn ApprovalStore>,
    events: Arc<dyn ApprovalEvents>,
    opts: AdminOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    metrics: Option<Arc<dyn MetricsSource>>,
) {
    serve_admin_with_console(store, events, opts, None, metrics, listener, shutdown).await;
}

/// [`serve_admin`], with the web dashboard when `console` is given.
pub async fn serve_admin_with_console(
    store: Arc<dyn ApprovalStore>,
    events: Arc<dyn ApprovalEvents>,
    opts: AdminOptions,
    console: Option<Arc<toolgate_console::Console>>,
    metrics: Option<Arc<dyn MetricsSource>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let admin = Arc::new(Admin {
        store,
        events,
        opts,
        seen: SeenSignatures::default(),
        metrics,
        console,
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    let acceptor = toolgate_listen::Acceptor::new(listener, toolgate_listen::MAX_CONNECTIONS);
    loop {
        let (stream, slot) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let admin = admin.clone();
        let service = hyper::service::service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(handle(&admin, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(acceptor);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// Every way a request is refused.
#[derive(Debug)]
enum Refusal {
    /// No admin token, or the wrong one.
    Unauthorized {
        token_sent: bool,
    },
    /// A webhook callback with a bad, stale or replayed signature.
    BadSignature(BadSignature),
    BadRequest(String),
    TooLarge(usize),
    NoRoute,
    NoWebhook,
    /// A Host or Origin a DNS-rebinding page would send (see `check_host`).
    Forbidden(String),
    MethodNotAllowed(&'static str),
    Store(ApprovalError),
}

impl From<ApprovalError> for Refusal {
    fn from(e: ApprovalError) -> Refusal {
        Refusal::Store(e)
    }
}

impl Refusal {
    fn response(self) -> Response<Body> {
        let (status, code, message) = match &self {
            Refusal::Unauthorized { token_sent: false } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin API needs Authorization: Bearer <admin token>".to_string(),
            ),
            Refusal::Unauthorized { token_sent: true } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not the admin token".to_string(),
            ),
            Refusal::BadSignature(why) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("webhook callback refused: {}", why.message()),
            ),
            Refusal::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, "bad_request", message.clone())
            }
            Refusal::TooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                format!("the body is larger than {max} bytes"),
            ),
            Refusal::NoRoute => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint (see GET /approvals)".to_string(),
            ),
            Refusal::NoWebhook => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no webhook is configured, so there is no webhook callback".to_string(),
            ),
            Refusal::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message.clone()),
            Refusal::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed".to_string(),
            ),
            Refusal::Store(e @ ApprovalError::Unknown(_)) => {
                (StatusCode::NOT_FOUND, "unknown", e.to_string())
            }
            Refusal::Store(e @ ApprovalError::Expired(_)) => {
                (StatusCode::CONFLICT, "expired", e.to_string())
            }
            Refusal::Store(e @ ApprovalError::AlreadyDecided { .. }) => {
                (StatusCode::CONFLICT, "already_decided", e.to_string())
            }
            Refusal::Store(e @ ApprovalError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        };
        let mut response = json_response(
            status,
            &json!({"error": {"code": code, "message": message}}),
        );
        let headers = response.headers_mut();
        match self {
            Refusal::Unauthorized { token_sent } => {
                let challenge = if token_sent {
                    r#"Bearer realm="toolgate-admin", error="invalid_token""#
                } else {
                    r#"Bearer realm="toolgate-admin""#
                };
                headers.insert("www-authenticate", HeaderValue::from_static(challenge));
            }
            Refusal::BadSignature(_) => {
                headers.insert(
                    "www-authenticate",
                    HeaderValue::from_static(r#"X-Toolgate-Signature realm="toolgate-webhook""#),
                );
            }
            Refusal::MethodNotAllowed(allow) => {
                headers.insert("allow", HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("serialisable"),
        )))
        .expect("valid response")
}

/// A dashboard answer as an HTTP response.
fn console_response(answer: toolgate_console::Response) -> Response<Body> {
    let mut builder = Response::builder()
        .status(answer.status)
        .header("content-type", answer.content_type);
    for (name, value) in answer.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(answer.body)))
        .expect("valid response")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    route(admin, req).await.unwrap_or_else(Refusal::response)
}

async fn route(admin: &Admin, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    check_host(&admin.opts, req.headers())?;
    let path = req.uri().path().to_string();
    if path == "/webhook/decide" {
        if req.method() != Method::POST {
            return Err(Refusal::MethodNotAllowed("POST"));
        }
        return callback(admin, req).await;
    }
    if admin.console.is_some() {
        if let Some(asset) = toolgate_console::Console::asset(req.method().as_str(), &path) {
            return Ok(console_response(asset));
        }
    }
    authorize(&admin.opts, req.headers())?;
    if let Some(console) = admin
        .console
        .as_ref()
        .filter(|_| toolgate_console::Console::is_api(&path))
    {
        let method = req.method().as_str().to_string();
        let query = req.uri().query().map(str::to_string);
        let body = read_body_up_to(req, MAX_CONSOLE_BODY).await?;
        let answer = console.api(&method, &path, query.as_deref(), &body).await;
        return Ok(console_response(answer));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["approvals"] if method == Method::GET => list(admin, req.uri().query()),
        ["approvals", id] if !id.is_empty() && method == Method::GET => show(admin, id),
        ["approvals", id, action @ ("approve" | "deny")]
            if !id.is_empty() && method == Method::POST =>
        {
            let (id, approve) = (id.to_string(), *action == "approve");
            let body = read_body(req).await?;
            decide_by_admin(admin, &id, approve, &body)
        }
        ["metrics"] => metrics(admin, &method),
        ["approvals"] | ["approvals", _] => Err(Refusal::MethodNotAllowed("GET")),
        ["approvals", _, "approve" | "deny"] => Err(Refusal::MethodNotAllowed("POST")),
        _ => Err(Refusal::NoRoute),
    }
}

/// DNS-rebinding protection, as `/mcp` has it (toolgate-serve's `http.rs`):
/// on a loopback listener the Host must be a loopback name, the listener's
/// address or the host of the webhook's `admin_url`; a browser's Origin, on
/// any listener, must be loopback or the page's own (the Host). Checked
/// before anything else, the dashboard's page included.
fn check_host(opts: &AdminOptions, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = header(headers, "host").unwrap_or_default();
    if opts.listen.ip().is_loopback() {
        let admin_url_host = opts.webhook.as_ref().map(|w| authority(&w.admin_url));
        let allowed = toolgate_listen::is_loopback_host(host)
            || host == opts.listen.to_string()
            || admin_url_host.is_some_and(|a| !a.is_empty() && a.eq_ignore_ascii_case(host));
        if !allowed {
            return Err(Refusal::Forbidden(format!(
                "host {host:?} is not allowed on the admin listener"
            )));
        }
    }
    if let Some(origin) = header(headers, "origin") {
        let web = origin.starts_with("http://") || origin.starts_with("https://");
        let origin_host = authority(origin);
        let allowed = web
            && (toolgate_listen::is_loopback_host(origin_host)
                || (!host.is_empty() && origin_host.eq_ignore_ascii_case(host)));
        if !allowed {
            return Err(Refusal::Forbidden(format!(
                "origin {origin:?} is not allowed on the admin listener"
            )));
        }
    }
    Ok(())
}

/// `host[:port]` of `scheme://host[:port]/...`.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// The bearer token's SHA-256 against the admin token's, in constant time.
fn authorize(opts: &AdminOptions, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = header(headers, "authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let Some(token) = token else {
        return Err(Refusal::Unauthorized { token_sent: false });
    };
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if bool::from(hash.ct_eq(&opts.token_sha256)) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized { token_sent: true })
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Refusal> {
    read_body_up_to(req, MAX_BODY).await
}

async fn read_body_up_to(req: Request<Incoming>, max: usize) -> Result<Bytes, Refusal> {
    if header(req.headers(), "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > max)
    {
        return Err(Refusal::TooLarge(max));
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Refusal::TooLarge(max))
        }
        Err(_) => Err(Refusal::BadRequest("could not read the body".into())),
    }
}

fn list(admin: &Admin, query: Option<&str>) -> Result<Response<Body>, Refusal> {
    let mut all = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair {
            "all=true" | "all=1" | "all" => all = true,
            "all=false" | "all=0" => all = false,
            other => {
                return Err(Refusal::BadRequest(format!(
                    "unknown query parameter {other:?} (expected all=true or all=false)"
                )))
            }
        }
    }
    let now = now_ms();
    let requests = admin.store.list(!all, now)?;
    let approvals: Vec<Value> = requests.iter().map(|r| request_json(r, now)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "approvals": approvals }),
    ))
}

/// `GET /metrics`: the exposition, rendered now.
fn metrics(admin: &Admin, method: &Method) -> Result<Response<Body>, Refusal> {
    let Some(source) = &admin.metrics else {
        return Err(Refusal::NoRoute);
    };
    if method != Method::GET {
        return Err(Refusal::MethodNotAllowed("GET"));
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(source.render())))
        .expect("valid response"))
}

fn show(admin: &Admin, id: &str) -> Result<Response<Body>, Refusal> {
    let request = admin
        .store
        .get(id)?
        .ok_or_else(|| ApprovalError::Unknown(id.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        &request_json(&request, now_ms()),
    ))
}

/// The body of `POST /approvals/{id}/approve|deny` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// The body of `POST /webhook/decide`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    id: String,
    decision: Decision,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Approve,
    Deny,
}

/// A JSON object with no repeated key, into `T`.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    toolgate_jsonrpc::parse_object(body)
        .map_err(|why| Refusal::BadRequest(format!("invalid body: {why}")))
}

fn decide_by_admin(
    admin: &Admin,
    id: &str,
    approve: bool,
    body: &[u8],
) -> Result<Response<Body>, Refusal> {
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        parse_json(body)?
    };
    decide(admin, id, approve, body.by, body.reason, Via::Api, "admin")
}

async fn callback(admin: &Admin, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let Some(webhook) = &admin.opts.webhook else {
        return Err(Refusal::NoWebhook);
    };
    let timestamp = header(req.headers(), TIMESTAMP_HEADER).map(str::to_string);
    let signature = header(req.headers(), SIGNATURE_HEADER).map(str::to_string);
    let body = read_body(req).await?;
    admin
        .seen
        .verify(
            webhook.secret.as_bytes(),
            timestamp.as_deref(),
            signature.as_deref(),
            &body,
            now_ms() / 1000,
        )
        .map_err(Refusal::BadSignature)?;
    let body: CallbackBody = parse_json(&body)?;
    let approve = matches!(body.decision, Decision::Approve);
    decide(
        admin,
        &body.id,
        approve,
        body.by,
        body.reason,
        Via::Webhook,
        "webhook",
    )
}

/// Decides through the store (its one atomic step), then tells `events`.
fn decide(
    admin: &Admin,
    id: &str,
    approve: bool,
    by: Option<String>,
    reason: Option<String>,
    via: Via,
    default_by: &str,
) -> Result<Response<Body>, Refusal> {
    let by = by.unwrap_or_else(|| default_by.to_string());
    if by.trim().is_empty() || by.chars().count() > MAX_BY_CHARS || by.chars().any(char::is_control)
    {
        return Err(Refusal::BadRequest(format!(
            "\"by\" must be 1 to {MAX_BY_CHARS} characters with no control characters"
        )));
    }
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(Refusal::BadRequest(format!(
            "\"reason\" must be at most {MAX_REASON_CHARS} characters"
        )));
    }
    let now = now_ms();
    let decided = Decided {
        by,
        via,
        at_ms: now,
        reason: reason.filter(|r| !r.is_empty()),
    };
    let request = admin.store.decide(id, approve, decided, now)?;
    admin.events.decided(&request);
    Ok(json_response(StatusCode::OK, &request_json(&request, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, admin_url: Option<&str>, host: &str, origin: Option<&str>) -> bool {
        let mut opts = AdminOptions::new([7; 32]);
        opts.listen = listen.parse().unwrap();
        opts.webhook = admin_url.map(|url| crate::Webhook::new("http://hook", "k", url));
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        check_host(&opts, &headers).is_ok()
    }

    #[test]
    fn a_loopback_listener_takes_loopback_hosts_only() {
        let local = "127.0.0.1:8081";
        for host in [
            "127.0.0.1:8081",
            "localhost:8081",
            "[::1]:8081",
            "localhost",
        ] {
            assert!(check(local, None, host, None), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8081",
            "localhost.evil.example",
            "",
        ] {
            assert!(!check(local, None, host, None), "{host}");
        }
        // The host the webhook receiver is told to call back on.
        assert!(check(
            local,
            Some("http://admin.internal:9000"),
            "admin.internal:9000",
            None
        ));
        assert!(!check(
            local,
            Some("http://admin.internal:9000"),
            "evil.example",
            None
        ));
        // Any host on a public listener (as /mcp without allowed_hosts).
        assert!(check("0.0.0.0:8081", None, "gateway.example:8081", None));
    }

    #[test]
    fn a_foreign_origin_is_refused() {
        let local = "127.0.0.1:8081";
        assert!(check(
            local,
            None,
            "127.0.0.1:8081",
            Some("http://127.0.0.1:8081")
        ));
        assert!(!check(
            local,
            None,
            "127.0.0.1:8081",
            Some("http://evil.example")
        ));
        assert!(!check(local, None, "127.0.0.1:8081", Some("null")));
        let public = "0.0.0.0:8081";
        assert!(check(
            public,
            None,
            "gw.example:8081",
            Some("https://gw.example:8081")
        ));
        assert!(!check(
            public,
            None,
            "gw.example:8081",
            Some("https://evil.example")
        ));
    }
}
