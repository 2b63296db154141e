//! One MCP client over one keep-alive HTTP/1.1 connection: the requests
//! `http-bench` sends (initialize, tools/call in either era) and the checks
//! on each answer, which may come as JSON or as a one-event SSE stream.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// The longest a single request may take before the bench calls it an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const HANDSHAKE_VERSION: &str = "2025-11-25";
const STATELESS_VERSION: &str = "2026-07-28";

/// Which era of the protocol the clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// 2025-11-25: initialize + notifications/initialized, then calls carry the session id.
    Handshake,
    /// 2026-07-28: no initialize; every request carries its version in `_meta` and headers.
    #[value(name = "2026")]
    Stateless,
}

/// Where an MCP endpoint is: its socket address and the path of its URL.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: String,
    authority: HeaderValue,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, path: &str) -> Endpoint {
        let authority = HeaderValue::from_str(&addr.to_string()).expect("an address is a header");
        Endpoint {
            addr,
            path: path.to_string(),
            authority,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// A session id as the server gave it.
pub type SessionId = HeaderValue;

/// What a request is, for the headers 2026-07-28 wants beside the body.
struct Routing<'a> {
    method: &'static str,
    name: Option<&'a str>,
}

pub struct Client<'e> {
    endpoint: &'e Endpoint,
    sender: SendRequest<Full<Bytes>>,
}

impl<'e> Client<'e> {
    pub async fn connect(endpoint: &'e Endpoint) -> Result<Client<'e>> {
        let stream = tokio::net::TcpStream::connect(endpoint.addr)
            .await
            .with_context(|| format!("cannot connect to {}", endpoint.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client { endpoint, sender })
    }

    /// The 2025 handshake: initialize, then notifications/initialized with
    /// the session id it gave. Returns that session id.
    pub async fn initialize(&mut self) -> Result<SessionId> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{HANDSHAKE_VERSION}","capabilities":{{}},"clientInfo":{{"name":"http-bench","version":"0"}}}}}}"#
        );
        let routing = Routing {
            method: "initialize",
            name: None,
        };
        let (status, headers, bytes) = self.post(body, Mode::Handshake, None, &routing).await?;
        let msg = message(status, &headers, &bytes).context("initialize")?;
        if msg.pointer("/result/protocolVersion").is_none() {
            bail!("initialize failed: {}", snippet(&msg.to_string()));
        }
        let session = headers
            .get(SESSION)
            .cloned()
            .ok_or_else(|| anyhow!("initialize answered without an Mcp-Session-Id header"))?;
        let body = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string();
        let routing = Routing {
            method: "notifications/initialized",
            name: None,
        };
        let (status, _, bytes) = self
            .post(body, Mode::Handshake, Some(&session), &routing)
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!(
                "notifications/initialized answered {status}, not 202 Accepted: {}",
                snippet(&String::from_utf8_lossy(&bytes))
            );
        }
        Ok(session)
    }

    /// One tools/call of `echo`, checked: the answer must be a result that
    /// echoes `text` (and, in 2026 mode, says `"resultType": "complete"`).
    pub async fn echo(
        &mut self,
        mode: Mode,
        session: Option<&SessionId>,
        id: u64,
        text: &str,
    ) -> Result<()> {
        let msg = self.call_tool(mode, session, id, "echo", text).await?;
        let echoed = msg
            .pointer("/result/content/0/text")
            .and_then(Value::as_str);
        if echoed != Some(text) {
            bail!(
                "tools/call echo did not echo {text:?}: {}",
                snippet(&msg.to_string())
            );
        }
        if mode == Mode::Stateless
            && msg.pointer("/result/resultType") != Some(&Value::from("complete"))
        {
            bail!(
                "a 2026-07-28 result lacks \"resultType\": \"complete\": {}",
                snippet(&msg.to_string())
            );
        }
        Ok(())
    }

    /// One tools/call; returns the JSON-RPC message that answers it.
    pub async fn call_tool(
        &mut self,
        mode: Mode,
        session: Option<&SessionId>,
        id: u64,
        tool: &str,
        text: &str,
    ) -> Result<Value> {
        // The text is the bench's own (letters, digits, dashes): no escaping needed.
        let body = match mode {
            Mode::Handshake => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{text}"}}}}}}"#
            ),
            Mode::Stateless => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{text}"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{STATELESS_VERSION}","io.modelcontextprotocol/clientInfo":{{"name":"http-bench","version":"0"}},"io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
            ),
        };
        let routing = Routing {
            method: "tools/call",
            name: Some(tool),
        };
        let (status, headers, bytes) = self.post(body, mode, session, &routing).await?;
        let msg = message(status, &headers, &bytes).context("tools/call")?;
        if msg.get("id") != Some(&Value::from(id)) {
            bail!(
                "answer to request {id} has another id: {}",
                snippet(&msg.to_string())
            );
        }
        Ok(msg)
    }

    async fn post(
        &mut self,
        body: String,
        mode: Mode,
        session: Option<&SessionId>,
        routing: &Routing<'_>,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.path.as_str())
            .header(HOST, self.endpoint.authority.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
        match mode {
            Mode::Handshake => {
                if routing.method != "initialize" {
                    req = req.header(
                        PROTOCOL_VERSION,
                        HeaderValue::from_static(HANDSHAKE_VERSION),
                    );
                }
                if let Some(session) = session {
                    req = req.header(SESSION, session.clone());
                }
            }
            Mode::Stateless => {
                req = req
                    .header(
                        PROTOCOL_VERSION,
                        HeaderValue::from_static(STATELESS_VERSION),
                    )
                    .header(MCP_METHOD, HeaderValue::from_static(routing.method));
                if let Some(name) = routing.name {
                    req = req.header(MCP_NAME, HeaderValue::from_str(name)?);
                }
            }
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>((parts.status, parts.headers, bytes))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(answer) => answer.with_context(|| format!("POST {}", self.endpoint.url())),
            Err(_) => bail!("POST {} took over {REQUEST_TIMEOUT:?}", self.endpoint.url()),
        }
    }
}

/// The JSON-RPC message in an answer: the body itself, or the first SSE
/// event that carries a response.
fn message(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Result<Value> {
    if status != StatusCode::OK {
        bail!("HTTP {status}: {}", snippet(&String::from_utf8_lossy(body)));
    }
    let sse = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !sse {
        return serde_json::from_slice(body)
            .with_context(|| format!("not JSON: {}", snippet(&String::from_utf8_lossy(body))));
    }
    let text = std::str::from_utf8(body).context("an SSE stream that is not UTF-8")?;
    for event in text.split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let msg: Value = serde_json::from_str(&data.join("\n"))
            .with_context(|| format!("an SSE event that is not JSON: {}", snippet(event)))?;
        if msg.get("result").is_some() || msg.get("error").is_some() {
            return Ok(msg);
        }
    }
    bail!("an SSE stream with no response in it: {}", snippet(text))
}

fn snippet(s: &str) -> String {
    let mut s = s.trim().to_string();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
