//! The HTTP+SSE transport of MCP 2024-11-05, for clients that still speak
//! it: `GET /sse` opens an event stream whose first event names the endpoint
//! to POST to (`/messages?session_id=ID`); every answer and every message
//! from the servers comes back on that stream. Each POST is answered `202
//! Accepted` at once and decided exactly as a Streamable HTTP message is
//! (`http::message`), with the session token the `initialize` answer made.
//!
//! A legacy session lives in the process that holds its stream (the stream
//! is the session); it ends when the client closes the stream.

use crate::gateway::{Caller, Gateway, Reply};
use crate::session::random_id;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The open legacy streams of this process, by their id.
#[derive(Default)]
pub(crate) struct LegacySessions {
    open: Mutex<HashMap<String, Stream>>,
}

#[derive(Clone)]
struct Stream {
    /// The grant that opened the stream: only it may post to it.
    grant: String,
    /// The sealed session token from the `initialize` answer.
    token: Arc<Mutex<Option<String>>>,
    tx: mpsc::UnboundedSender<Value>,
}

/// Removes a stream's entry (and ends its gateway session) when the client
/// goes away and hyper drops the response body.
struct Closer {
    id: String,
    sessions: Arc<LegacySessions>,
    gateway: Arc<Gateway>,
    caller: Caller,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let stream = self
            .sessions
            .open
            .lock()
            .expect("legacy lock")
            .remove(&self.id);
        let token = stream.and_then(|s| s.token.lock().expect("token lock").clone());
        let Some(session) = token.and_then(|t| self.gateway.session(&self.caller, &t)) else {
            return;
        };
        // Dropped outside a runtime only when the process is ending anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let gateway = self.gateway.clone();
            runtime.spawn(async move { gateway.close_session(&session.id).await });
        }
    }
}

impl LegacySessions {
    /// `GET /sse`: a new stream; its first event is the endpoint.
    pub(crate) fn open(
        self: &Arc<Self>,
        gateway: &Arc<Gateway>,
        caller: &Caller,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        let id = random_id();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.open.lock().expect("legacy lock").insert(
            id.clone(),
            Stream {
                grant: caller.grant.name.clone(),
                token: Arc::new(Mutex::new(None)),
                tx,
            },
        );
        let endpoint = Frame::data(Bytes::from(format!(
            "event: endpoint\ndata: /messages?session_id={id}\n\n"
        )));
        let closer = Closer {
            id,
            sessions: self.clone(),
            gateway: gateway.clone(),
            caller: caller.clone(),
        };
        let mut first = Some(endpoint);
        StreamBody::new(futures_util::stream::poll_fn(move |cx| {
            let _keep = &closer;
            if let Some(frame) = first.take() {
                return std::task::Poll::Ready(Some(Ok(frame)));
            }
            rx.poll_recv(cx)
                .map(|m| m.map(|message| Ok(crate::http::event_frame(None, &message))))
        }))
    }

    /// `POST /messages?session_id=ID`: `None` when there is no such stream for
    /// this grant; else the messages are handled in a task of their own (a
    /// call may need the client's answer to a server's request, which comes
    /// in another POST) and their answers go to the stream.
    pub(crate) fn post(
        &self,
        gateway: &Arc<Gateway>,
        caller: &Caller,
        id: &str,
        messages: Vec<Value>,
    ) -> Option<()> {
        let stream = self.open.lock().expect("legacy lock").get(id).cloned()?;
        if stream.grant != caller.grant.name {
            return None;
        }
        for message in messages {
            let gateway = gateway.clone();
            let caller = caller.clone();
            let stream = stream.clone();
            tokio::spawn(async move { handle(&gateway, &caller, &stream, message).await });
        }
        Some(())
    }
}

async fn handle(gateway: &Arc<Gateway>, caller: &Caller, stream: &Stream, message: Value) {
    let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
    let mut headers = HeaderMap::new();
    let token = stream.token.lock().expect("token lock").clone();
    if let (Some(token), false) = (token, is_initialize) {
        if let Ok(value) = HeaderValue::from_str(&token) {
            headers.insert("mcp-session-id", value);
        }
    }
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let mut heads = crate::http::Heads::of(&headers);
    heads.legacy = true;
    match crate::http::message(gateway, caller, &heads, message).await {
        crate::http::Answer::Reply(reply, new_token) => {
            if let Some(token) = new_token {
                // Messages from the servers that belong to no request.
                if let Some(session) = gateway.session(caller, &token) {
                    let mut from_servers = gateway.open_stream(caller, &session.id);
                    let tx = stream.tx.clone();
                    tokio::spawn(async move {
                        while let Some(m) = from_servers.recv().await {
                            if tx.send(m).is_err() {
                                break;
                            }
                        }
                    });
                }
                *stream.token.lock().expect("token lock") = Some(token);
            }
            match reply {
                Reply::Json(v) => {
                    let _ = stream.tx.send(v);
                }
                Reply::Raw(bytes) => {
                    if let Ok(v) = serde_json::from_slice(&bytes) {
                        let _ = stream.tx.send(v);
                    }
                }
                Reply::Stream(log) => {
                    let mut index = 0;
                    while let Some(m) = log.get(index).await {
                        let _ = stream.tx.send(m);
                        index += 1;
                    }
                }
                Reply::Accepted => {}
            }
        }
        // Refused at the HTTP layer: the JSON-RPC error in the body, if any,
        // is the answer.
        crate::http::Answer::Http(response) => {
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            let answer = body
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter(|v| v.get("jsonrpc").is_some());
            let answer = answer.unwrap_or_else(|| {
                toolgate_jsonrpc::error_response(
                    &id,
                    toolgate_jsonrpc::INVALID_REQUEST,
                    "Invalid Request",
                    None,
                )
            });
            if !id.is_null() || answer.get("id").is_some_and(|i| !i.is_null()) {
                let _ = stream.tx.send(answer);
            }
        }
    }
}
