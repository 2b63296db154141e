//! A stateless server's `subscriptions/listen` stream (2026-07-28): what a
//! session's GET stream is to a server of the handshake. Opened once the
//! server is ready, for the list-changed kinds its `server/discover`
//! advertises; its notifications are the connection's events (the gateway
//! fetches the lists again and tells its clients). Opened again when the
//! server ends it; given up when the server refuses it.

use super::{content_type_is, is_sse, HttpLink, DEFAULT_RETRY};
use crate::conn::Conn;
use crate::modern;
use crate::sse::SseParser;
use crate::ServerInfo;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The id of the listen request (a string: never one of the connection's
/// own numeric request ids).
const LISTEN_ID: &str = "toolgate-listen";

/// The notification filter for what `info` advertises: each list whose
/// capability says `listChanged`; `None` when there is none.
pub(crate) fn filter(info: &ServerInfo) -> Option<Value> {
    let mut filter = Map::new();
    for (capability, key) in [
        ("tools", "toolsListChanged"),
        ("prompts", "promptsListChanged"),
        ("resources", "resourcesListChanged"),
    ] {
        let advertised = info
            .capabilities
            .get(capability)
            .and_then(|c| c.get("listChanged"))
            .and_then(Value::as_bool);
        if advertised == Some(true) {
            filter.insert(key.into(), Value::Bool(true));
        }
    }
    (!filter.is_empty()).then_some(Value::Object(filter))
}

/// Starts the stream (in the link's GET-stream slot, so that it ends with
/// the link) when `info` advertises a list that changes.
pub(crate) fn start(conn: &Arc<Conn>, link: &Arc<HttpLink>, info: &ServerInfo) {
    let Some(filter) = filter(info) else {
        return;
    };
    let task = tokio::spawn(listen(conn.clone(), link.clone(), filter));
    if let Some(old) = link.get_stream.lock().unwrap().replace(task) {
        old.abort();
    }
}

async fn listen(conn: Arc<Conn>, link: Arc<HttpLink>, filter: Value) {
    let params = modern::stamp(Some(json!({ "notifications": filter })));
    let body = json!({"jsonrpc": "2.0", "id": LISTEN_ID, "method": "subscriptions/listen", "params": params});
    let body = Bytes::from(body.to_string());
    let route = modern::route("subscriptions/listen", None);
    let mut failures = 0u32;
    loop {
        let req = link.request(Method::POST, body.clone(), None, route.as_ref());
        let mut retry = DEFAULT_RETRY;
        match link.client.request(req).await {
            Ok(resp) if resp.status() == StatusCode::OK && is_sse(&resp) => {
                failures = 0;
                let mut parser = SseParser::default();
                let mut body = resp.into_body();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    for ev in parser.push(&data) {
                        let message = ev.event.is_empty() || ev.event == "message";
                        if message && !deliver(&conn, &ev.data) {
                            return;
                        }
                    }
                }
                if let Some(ms) = parser.retry_ms {
                    retry = std::time::Duration::from_millis(ms);
                }
            }
            // Some servers (the conformance suite's reference server) stream
            // it as JSON text, one message a line.
            Ok(resp)
                if resp.status() == StatusCode::OK
                    && content_type_is(&resp, b"application/json") =>
            {
                failures = 0;
                let mut pending = Vec::new();
                let mut body = resp.into_body();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    pending.extend_from_slice(&data);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let text = String::from_utf8_lossy(&line);
                        if !text.trim().is_empty() && !deliver(&conn, &text) {
                            return;
                        }
                    }
                }
                if !pending.is_empty() && !deliver(&conn, &String::from_utf8_lossy(&pending)) {
                    return;
                }
            }
            // Refused (not offered after all, or another answer): give up.
            Ok(_) => return,
            Err(e) if e.is_connect() => {
                link.lost.notify_one();
                return;
            }
            Err(_) => failures += 1,
        }
        if failures > 5 || conn.is_shutting_down() || !link.is_stateless() {
            return;
        }
        tokio::time::sleep(retry).await;
    }
}

/// One message of the stream: a notification is an event of the connection
/// (the acknowledgement is the stream's own business); false when it is the
/// listen request's answer is an error (not listened to, then).
fn deliver(conn: &Arc<Conn>, text: &str) -> bool {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return true;
    };
    if message.get("id").is_some() {
        return message.get("error").is_none();
    }
    let method = message.get("method").and_then(Value::as_str);
    if method.is_some_and(|m| m != "notifications/subscriptions/acknowledged") {
        conn.dispatch(message, None);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(capabilities: Value) -> ServerInfo {
        ServerInfo {
            protocol_version: modern::STATELESS_VERSION.into(),
            capabilities,
            server_info: json!({}),
            instructions: None,
        }
    }

    #[test]
    fn only_the_lists_advertised_as_changing_are_asked_for() {
        let caps = json!({"tools": {"listChanged": true}, "prompts": {}, "resources": {"listChanged": true, "subscribe": true}});
        assert_eq!(
            filter(&info(caps)),
            Some(json!({"toolsListChanged": true, "resourcesListChanged": true}))
        );
        assert_eq!(filter(&info(json!({"tools": {}, "logging": {}}))), None);
    }
}
