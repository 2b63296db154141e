//! A stateless server's `subscriptions/listen` stream (2026-07-28): what a
//! session's GET stream is to a server of the handshake. Opened once the
//! server is ready, for the list-changed kinds its `server/discover`
//! advertises; its notifications are the connection's events (the gateway
//! fetches the lists again and tells its clients). Opened again when the
//! server ends it; given up when the server refuses it.

use super::{is_sse, HttpLink, DEFAULT_RETRY};
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
                        if !(ev.event.is_empty() || ev.event == "message") {
                            continue;
                        }
                        let Ok(message) = serde_json::from_str::<Value>(&ev.data) else {
                            continue;
                        };
                        // The acknowledgement and the stream's own end are
                        // the stream's business; notifications are events.
                        let method = message.get("method").and_then(Value::as_str);
                        if message.get("id").is_none()
                            && method
                                .is_some_and(|m| m != "notifications/subscriptions/acknowledged")
                        {
                            conn.dispatch(message, None);
                        }
                    }
                }
                if let Some(ms) = parser.retry_ms {
                    retry = std::time::Duration::from_millis(ms);
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
