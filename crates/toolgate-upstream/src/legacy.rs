//! The legacy HTTP+SSE transport (MCP 2024-11-05): GET the SSE stream, whose
//! first `endpoint` event names the URL to POST messages to; every answer
//! comes back on the stream. When the stream ends the connection is down and
//! is made again with backoff.

use crate::conn::{Conn, Link, Restarts};
use crate::http::{Endpoint, HttpClient};
use crate::sse::SseParser;
use crate::CallError;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use serde_json::Value;
use std::sync::Arc;

pub(crate) struct LegacyLink {
    client: HttpClient,
    post_uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

pub(crate) fn spawn_post(conn: Arc<Conn>, link: Arc<LegacyLink>, body: Bytes, origin: Option<u64>) {
    tokio::spawn(async move {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(link.post_uri.clone())
            .header("content-type", "application/json");
        for (k, v) in &link.headers {
            b = b.header(k, v);
        }
        let Ok(req) = b.body(body) else {
            return;
        };
        let failure = match link.client.request(req).await {
            Ok(resp) if resp.status().is_success() => {
                let _ = resp.into_body().collect().await;
                None
            }
            Ok(resp) => Some(format!("server answered HTTP {}", resp.status())),
            Err(e) => Some(format!(
                "POST to server {} failed: {}",
                conn.name(),
                toolgate_tls::describe(&e)
            )),
        };
        if let (Some(id), Some(reason)) = (origin, failure) {
            conn.complete(id, Err(CallError::Unavailable(reason)));
        }
    });
}

/// Resolves the `endpoint` event's data against the stream's URL.
fn resolve(base: &Uri, endpoint: &str) -> Option<Uri> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.parse().ok();
    }
    let path = if endpoint.starts_with('/') {
        endpoint.to_owned()
    } else {
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{endpoint}")
    };
    Uri::builder()
        .scheme(base.scheme_str()?)
        .authority(base.authority()?.as_str())
        .path_and_query(path)
        .build()
        .ok()
}

pub(crate) async fn supervise(conn: Arc<Conn>, url: String, headers: Vec<(String, String)>) {
    let Some(Endpoint {
        uri,
        headers,
        client,
    }) = conn.or_go_down(Endpoint::new(&url, &headers))
    else {
        return;
    };
    let mut shutdown = conn.shutdown.subscribe();
    let mut restarts = Restarts::new(&conn);
    loop {
        restarts.begin();
        let reason = tokio::select! {
            r = connect_once(&conn, &client, &uri, &headers) => r,
            _ = shutdown.changed() => {
                conn.go_down("the gateway is shutting down");
                return;
            }
        };
        if !restarts.ended(&conn, &reason, &mut shutdown).await {
            return;
        }
    }
}

/// One life of the SSE stream; returns why it ended.
async fn connect_once(
    conn: &Arc<Conn>,
    client: &HttpClient,
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
) -> String {
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(uri.clone())
        .header("accept", "text/event-stream");
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let Ok(req) = b.body(Bytes::new()) else {
        return "cannot build the GET of the SSE stream".into();
    };
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            return format!(
                "GET of the SSE stream failed: {}",
                toolgate_tls::describe(&e)
            )
        }
    };
    if resp.status() != StatusCode::OK {
        return format!("GET of the SSE stream answered HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut parser = SseParser::default();
    let mut handshake: Option<tokio::task::JoinHandle<()>> = None;
    let reason = loop {
        let Some(Ok(frame)) = body.frame().await else {
            break "the SSE stream ended".to_owned();
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for ev in parser.push(&data) {
            if ev.event == "endpoint" && handshake.is_none() {
                let Some(post_uri) = resolve(uri, ev.data.trim()) else {
                    return format!("bad endpoint event {:?}", ev.data);
                };
                conn.set_link(Some(Link::Legacy(Arc::new(LegacyLink {
                    client: client.clone(),
                    post_uri,
                    headers: headers.to_vec(),
                }))));
                let c = conn.clone();
                handshake = Some(tokio::spawn(async move {
                    if let Err(e) = c.handshake().await {
                        c.go_down(&format!("initialize failed: {e}"));
                    }
                }));
            } else if ev.event.is_empty() || ev.event == "message" {
                if let Ok(msg) = serde_json::from_str::<Value>(&ev.data) {
                    conn.dispatch(msg, None);
                }
            }
        }
    };
    if let Some(h) = handshake {
        h.abort();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_resolution() {
        let base: Uri = "http://127.0.0.1:3001/sse".parse().unwrap();
        assert_eq!(
            resolve(&base, "/message?sessionId=abc")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:3001/message?sessionId=abc"
        );
        let base: Uri = "http://h:1/a/sse".parse().unwrap();
        assert_eq!(
            resolve(&base, "messages?x=1").unwrap().to_string(),
            "http://h:1/a/messages?x=1"
        );
    }
}
