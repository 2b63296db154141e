//! A fast MCP server over Streamable HTTP, as a baseline for `http-bench`:
//! the HTTP twin of `echo-server`, direct and behind `toolgate serve`.
//!
//! `http-echo [--listen 127.0.0.1:0]` prints `listening on ADDR` on stdout
//! once bound, then serves `POST /mcp`:
//! - `initialize` answers with a fresh `Mcp-Session-Id` header; the
//!   protocol version is the client's if known, else 2025-11-25;
//! - `tools/list` lists one tool, `echo`; `tools/call` echoes the `text`
//!   argument whatever the tool's name, so a benchmark can tell that a
//!   gateway refused a call rather than the server;
//! - 2026-07-28 requests: `server/discover`, and any request whose
//!   `params._meta` names its protocol version needs no session and gets
//!   `"resultType": "complete"` in its result;
//! - notifications and responses get 202, `GET` 405, `DELETE` 200.
//!
//! Deliberately absent: a session table (any session id is accepted, and
//! none is required), SSE streams, batches.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

const SESSION_HEADER: &str = "mcp-session-id";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const KNOWN_VERSIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
const LATEST_HANDSHAKE_VERSION: &str = "2025-11-25";

/// Session ids: a per-process prefix and a counter, unique enough for a bench.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

#[derive(clap::Parser)]
#[command(name = "http-echo", about = "A fast Streamable HTTP MCP echo server")]
struct Args {
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    let prefix = toolgate_clock::unix_now().as_nanos() as u64 ^ u64::from(std::process::id());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait for it to pass.
                eprintln!("http-echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, prefix));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, prefix: u64) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/mcp" {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    match *req.method() {
        Method::POST => {}
        Method::DELETE => return Ok(empty(StatusCode::OK)),
        _ => {
            let mut resp = empty(StatusCode::METHOD_NOT_ALLOWED);
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, DELETE"));
            return Ok(resp);
        }
    }
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(empty(StatusCode::BAD_REQUEST)),
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        let err = json!({"jsonrpc": "2.0", "id": null,
            "error": {"code": -32700, "message": "parse error"}});
        return Ok(json_response(StatusCode::BAD_REQUEST, &err, None));
    };
    // Notifications and responses carry no id: accepted, nothing to say.
    let (Some(id), Some(method)) = (msg.get("id"), msg.get("method").and_then(Value::as_str))
    else {
        return Ok(empty(StatusCode::ACCEPTED));
    };
    let params = msg.get("params");
    let stateless = params
        .and_then(|p| p.pointer("/_meta"))
        .and_then(|m| m.get(META_VERSION))
        .is_some();
    let mut session = None;
    let result = match method {
        "initialize" => {
            let asked = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str);
            let version = asked
                .filter(|v| KNOWN_VERSIONS.contains(v))
                .unwrap_or(LATEST_HANDSHAKE_VERSION);
            let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            session = Some(format!("{prefix:016x}-{n:x}"));
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "http-echo", "version": "0"}
            })
        }
        "server/discover" => json!({
            "supportedVersions": ["2026-07-28", LATEST_HANDSHAKE_VERSION],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "http-echo", "version": "0"}
        }),
        "tools/list" => json!({"tools": [{
            "name": "echo",
            "description": "Echoes its text argument",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}
        }]}),
        "tools/call" => {
            let text = params
                .and_then(|p| p.pointer("/arguments/text"))
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({"content": [{"type": "text", "text": text}]})
        }
        "ping" => json!({}),
        _ => {
            let err = json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("method not found: {method}")}});
            return Ok(json_response(StatusCode::OK, &err, None));
        }
    };
    let mut result = result;
    if stateless {
        result["resultType"] = json!("complete");
    }
    let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
    Ok(json_response(StatusCode::OK, &reply, session))
}

fn json_response(
    status: StatusCode,
    body: &Value,
    session: Option<String>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(id) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(SESSION_HEADER, id);
    }
    resp
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}
