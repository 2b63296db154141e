//! toolgate's side of the conversation with upstream MCP servers: the
//! gateway acts as an MCP *client* to each server it fronts.
//!
//! What callers rely on:
//!
//! - [`Upstream::start`] returns at once; the connection is made in the
//!   background (initialize handshake as a 2025-11-25 client declaring the
//!   `sampling`, `elicitation` and `roots` capabilities), and a stdio server
//!   that dies is restarted with exponential backoff ([`Backoff`]). A
//!   Streamable HTTP server that refuses the handshake as a server of the
//!   stateless generation only (`-32022`, listing 2026-07-28 and no
//!   handshake version) is discovered with `server/discover` and spoken to
//!   statelessly from then on; its [`ServerInfo::protocol_version`] is
//!   [`STATELESS_VERSION`].
//! - [`Upstream::request`] sends one request and resolves with its `result`
//!   (or a [`CallError`]). Ids on the upstream wire are the upstream
//!   connection's own; callers never see them. Traffic the server sends that
//!   belongs to this request (server-to-client requests such as
//!   `sampling/createMessage`, `elicitation/create`, `roots/list`; and
//!   `notifications/progress` and `notifications/message`) goes to the
//!   request's [`Downstream`]. `_meta.progressToken` is rewritten on the way
//!   up to a token unique on the connection and restored on the way down.
//!   Dropping the future before it resolves sends `notifications/cancelled`.
//! - Everything unrelated to a request (`notifications/tools/list_changed`,
//!   `.../resources/list_changed`, `.../prompts/list_changed`,
//!   `notifications/resources/updated`, log messages not tied to a request)
//!   is sent as [`UpstreamEvent::Notification`]; state changes as
//!   [`UpstreamEvent::Ready`] / [`UpstreamEvent::Down`].
//! - When the connection dies, every request in flight resolves at once with
//!   [`CallError::Unavailable`].
//!
//! Layout: `conn` holds what every transport shares (the table of requests in
//! flight, routing, cancellation, the handshake); `stdio`, `http` (Streamable
//! HTTP) and `legacy` (HTTP+SSE) each run one kind of connection; `modern`
//! is what the stateless generation adds to `http`; `sse` parses
//! event streams; `pool` is their HTTP/1.1 client (`raw` for `http://`, hyper
//! for `https://`).

mod conn;
mod http;
mod legacy;
mod modern;
mod pool;
mod raw;
mod sse;
mod stdio;

use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The protocol version toolgate asks for in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

pub use modern::{
    CLIENT_CAPABILITIES_KEY, CLIENT_INFO_KEY, PROTOCOL_VERSION_KEY, STATELESS_VERSION,
    UNSUPPORTED_PROTOCOL_VERSION,
};

/// A boxed future, for the object-safe [`Downstream`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How to reach one upstream server.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// The server's name in the gateway config (used in logs and events).
    pub name: String,
    pub transport: Transport,
    /// Restart policy for stdio servers (and reconnect policy for HTTP ones).
    pub backoff: Backoff,
    /// How long one request may take before it fails with [`CallError::Timeout`].
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout;
    /// its stderr goes to the gateway's stderr. The child gets the gateway's
    /// environment plus `env`; it never outlives the gateway.
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
    },
    /// A Streamable HTTP endpoint (`http://host:port/mcp`). `headers` are
    /// sent with every request (values may be secrets: never log them).
    Http {
        url: String,
        headers: Vec<(String, String)>,
        protocol: Protocol,
    },
    /// A legacy HTTP+SSE (2024-11-05) server: GET `url` for the event stream.
    Sse {
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// Which protocol generation a Streamable HTTP server is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// The 2025-11-25 handshake, or the stateless generation when the
    /// server refuses the handshake as a modern-only server.
    #[default]
    Auto,
    /// The 2025-11-25 handshake only.
    Handshake,
    /// The stateless generation (2026-07-28) only: no `initialize`.
    Stateless,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

/// What the server said about itself in its initialize result (or, for a
/// server spoken to statelessly, its `server/discover` result).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub protocol_version: String,
    /// `capabilities` object as sent.
    pub capabilities: Value,
    /// `serverInfo` object as sent.
    pub server_info: Value,
    pub instructions: Option<String>,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The server answered with a JSON-RPC error.
    #[error("upstream error {}: {}", .0.code, .0.message)]
    Rpc(RpcError),
    /// Not connected, or the connection died before the answer came.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A server's `result` for a request: parsed, or its text as the server
/// sent it (valid JSON, read once to find its end).
#[derive(Debug)]
pub enum Answer {
    Parsed(Value),
    Raw(Box<serde_json::value::RawValue>),
}

impl Answer {
    /// The result as a value (parsing it if it was kept as text).
    pub fn into_value(self) -> Result<Value, CallError> {
        match self {
            Answer::Parsed(value) => Ok(value),
            Answer::Raw(raw) => serde_json::from_str(raw.get()).map_err(|e| {
                CallError::Unavailable(format!("the server's answer cannot be read: {e}"))
            }),
        }
    }
}

/// The client side of one request: where the server's traffic about that
/// request goes. Implemented by the serve front (one per client request).
pub trait Downstream: Send + Sync + 'static {
    /// A server-to-client request; resolves with the client's `result` or error.
    fn request(&self, method: String, params: Option<Value>) -> BoxFuture<Result<Value, RpcError>>;
    /// A server-to-client notification tied to the request (progress, log message).
    fn notify(&self, method: String, params: Option<Value>);
    /// Which client session this request belongs to: server-to-client requests
    /// that arrive on a shared stdio connection with no request attached go to
    /// the session all requests in flight share (an error if they differ).
    fn session(&self) -> &str;
    /// Whether a request sent now could reach the client (for a session's
    /// own link: whether it has a stream open).
    fn reachable(&self) -> bool {
        true
    }
}

/// Things the connection reports that belong to no one request.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    Ready {
        server: String,
        info: Arc<ServerInfo>,
    },
    Down {
        server: String,
        reason: String,
    },
    Notification {
        server: String,
        method: String,
        params: Option<Value>,
    },
}

/// A handle to one upstream connection; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    conn: Arc<conn::Conn>,
    supervisor: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Upstream {
    /// Starts connecting in the background; returns at once. Must be called
    /// inside a tokio runtime.
    pub fn start(
        spec: UpstreamSpec,
        events: tokio::sync::mpsc::UnboundedSender<UpstreamEvent>,
    ) -> Upstream {
        Upstream::start_owned(spec, events, None)
    }

    /// [`Upstream::start`] for a connection that belongs to one client
    /// session: requests the server makes outside any call go to `owner`
    /// (instead of being refused as ambiguous).
    pub fn start_owned(
        spec: UpstreamSpec,
        events: tokio::sync::mpsc::UnboundedSender<UpstreamEvent>,
        owner: Option<Arc<dyn Downstream>>,
    ) -> Upstream {
        Upstream::launch(spec, events, owner, false)
    }

    /// Starts the connection; `probe`: when the first connection fails, the
    /// connection stays down (no retry).
    fn launch(
        spec: UpstreamSpec,
        events: tokio::sync::mpsc::UnboundedSender<UpstreamEvent>,
        owner: Option<Arc<dyn Downstream>>,
        probe: bool,
    ) -> Upstream {
        let transport = spec.transport.clone();
        let mut conn = conn::Conn::new(spec, events);
        conn.owner = owner;
        let conn = Arc::new(conn);
        let c = conn.clone();
        let task = match transport {
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            } => tokio::spawn(stdio::supervise(
                c,
                stdio::StdioCommand {
                    command,
                    args,
                    env,
                    cwd,
                },
            )),
            Transport::Http {
                url,
                headers,
                protocol,
            } => tokio::spawn(http::supervise(c, url, headers, protocol, probe)),
            Transport::Sse { url, headers } => tokio::spawn(legacy::supervise(c, url, headers)),
        };
        Upstream {
            conn,
            supervisor: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// For a Streamable HTTP server with [`Protocol::Auto`] that accepted
    /// the handshake: whether it also speaks the stateless generation, asked
    /// once with `server/discover` at [`STATELESS_VERSION`] (a result that
    /// lists it means yes; an error, an HTTP refusal or a 2025 server's
    /// answer means no). When it does, a second connection to the same URL
    /// with the same headers, spoken to statelessly only (its events go to
    /// `events`), ready when returned; `None` otherwise, and then nothing
    /// more is sent statelessly. The connection it was asked of is unchanged.
    pub async fn stateless_twin(
        &self,
        events: tokio::sync::mpsc::UnboundedSender<UpstreamEvent>,
        timeout: Duration,
    ) -> Option<Upstream> {
        let Transport::Http {
            url,
            headers,
            protocol: Protocol::Auto,
        } = &self.conn.spec.transport
        else {
            return None;
        };
        if self.info().is_none() || self.is_stateless() {
            return None;
        }
        let spec = UpstreamSpec {
            transport: Transport::Http {
                url: url.clone(),
                headers: headers.clone(),
                protocol: Protocol::Stateless,
            },
            ..self.conn.spec.clone()
        };
        let twin = Upstream::launch(spec, events, None, true);
        if twin.wait_ready(timeout).await {
            Some(twin)
        } else {
            twin.shutdown(Duration::ZERO).await;
            None
        }
    }

    /// The server's name in the gateway config.
    pub fn name(&self) -> &str {
        self.conn.name()
    }

    /// The server's initialize result while connected, `None` otherwise.
    pub fn info(&self) -> Option<Arc<ServerInfo>> {
        self.conn.info.borrow().clone()
    }

    /// Whether the server is connected and spoken to statelessly
    /// (2026-07-28): its answers may be `resultType: "input_required"`.
    pub fn is_stateless(&self) -> bool {
        self.conn
            .stateless
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the server is ready (or `timeout` passes); true when ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.conn.info.subscribe();
        let ready = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|i| i.is_some())).await,
            Ok(Ok(_))
        );
        ready
    }

    /// Sends a request; see the crate docs. `downstream` is `None` for the
    /// gateway's own requests (e.g. refreshing tools/list).
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> Result<Value, CallError> {
        self.request_answer(method, params, downstream)
            .await?
            .into_value()
    }

    /// [`Upstream::request`], with the answer as the server sent it when that
    /// is cheaper (a plain JSON answer over HTTP): for a caller that passes
    /// the result on without looking into it.
    pub async fn request_answer(
        &self,
        method: &str,
        params: Option<Value>,
        downstream: Option<Arc<dyn Downstream>>,
    ) -> Result<Answer, CallError> {
        self.conn.request(method, params, downstream, true).await
    }

    /// Sends a notification (e.g. `notifications/roots/list_changed`).
    pub async fn notify(&self, method: &str, params: Option<Value>) {
        self.conn.notify(method, params);
    }

    /// Stops the connection (closes stdin / sends HTTP DELETE), waits up to
    /// `grace` for a child to exit, then kills it.
    pub async fn shutdown(&self, grace: Duration) {
        self.conn.shutdown.send_replace(Some(grace));
        let task = self.supervisor.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
